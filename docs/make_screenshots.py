"""Screenshots of the app's screens, taken from a real window on a virtual screen (Xvfb), for the README.

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb python docs/make_screenshots.py      # writes docs/screenshots/*.png

It drives the app as an operator would, on the simulated rig, in the default 1280x800 window: connect,
teleoperate, record two episodes with a segment marked, review one in the Episodes tab, run two sessions of trials
of a replay policy of that episode (the second session is the one shown), and last start a tiny training run and
cancel it (the Train tab after Cancel).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    if not os.environ.get("DISPLAY"):
        print("needs a display: run under Xvfb (see the docstring)", file=sys.stderr)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl" if os.environ.get("MUJOCO_GL") == "egl" else "osmesa")
    from PyQt6.QtCore import QSettings, Qt
    from PyQt6.QtTest import QTest

    from ui.app import create_window, ensure_app

    app = ensure_app()
    tmp = Path(tempfile.mkdtemp(prefix="wb_shots_"))
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("record/task_history", ["transfer the cube to the right gripper", "insert the peg"])
    settings.setValue("train/runs_root", str(tmp / "runs"))
    win = create_window("sim-transfer-cube", settings=settings, dataset_dir=str(tmp / "cube"))
    win.resize(1280, 800)  # the app's default size: what a new operator sees
    win.show()

    def wait(cond, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"screenshots: waited {timeout} s for {what} ({win.banner.current})")

    def pause(s: float) -> None:
        wait(lambda t=time.monotonic() + s: time.monotonic() > t, s + 5, "time")

    def shot(name: str) -> None:
        pause(0.6)
        path = OUT / f"{name}.png"
        win.grab().save(str(path))
        print("wrote", path.relative_to(ROOT))

    OUT.mkdir(parents=True, exist_ok=True)
    win.rig_panel.connect_rig()
    wait(lambda: win.ctl.connected, 120, "connect")

    # Teleop: the scripted demonstrator is the leader; the start-up ceremony runs first
    win.show_tab(win.teleop_panel)
    win.teleop_panel.start()
    wait(lambda: win.ctl.state == "running", 120, "teleop")
    wait(lambda: win.ctl.latest_tick() is not None and win.ctl.latest_tick().index > 300, 120, "ticks")
    shot("teleop")
    win.show_tab(win.rig_panel)
    pause(1.5)
    shot("rig")
    win.ctl.stop_teleop()
    wait(lambda: not win.ctl.teleop_running, 60, "teleop stop")

    # Record: two episodes; a preset segment label marked with a number key during the second
    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube to the right gripper")
    rp.episodes.setValue(2)
    rp.length.setValue(8.0)
    if not rp.start():
        raise RuntimeError(f"recording did not start: {win.banner.current}")
    wait(lambda: rp.state == "recording", 120, "recording")
    wait(lambda: rp.state == "recording" and rp.episode_name == "episode_1" and rp.elapsed() > 2.0, 240,
         "second episode")
    win.activateWindow()
    QTest.keyClick(win, Qt.Key.Key_2)  # preset label 2, as the keyboard or a foot pedal sends it
    if not rp.marks:  # no window manager on a bare Xvfb: the window may not be active
        rp.mark_preset(1)
    pause(1.0)
    shot("record")
    wait(lambda: rp.session is None, 240, "session end")

    # Episodes: the table, the player scrubbed to the hand-over, a label
    ep = win.episodes_panel
    win.show_tab(ep)
    wait(lambda: ep.model.rowCount() == 2, 30, "episodes table")
    ep.select_names(["episode_0"])
    wait(lambda: ep.player.info is not None, 30, "player")
    ep.player.set_step(int(ep.player.info.steps * 0.55))
    ep.outcome_btns["success"].click()
    ep.notes.setPlainText("clean hand-over")
    ep.save_notes_btn.click()
    shot("episodes")
    trials(win, tmp, wait, pause, shot)
    train(win, wait, shot)  # last: the Train tab's shot is of a run started and cancelled
    win.close()
    return 0


def trials(win, tmp: Path, wait, pause, shot) -> None:
    """Trials: a replay policy of the first recorded episode (served by a local child server). A first session of
    one trial, then a second session of two: the shot shows its second trial running (the first one's result, the
    latency, the predicted chunk), then its results and session table once it ended."""
    from finetune.replay_policy import make_replay_policy
    from recorder.reader import read_info

    ep_path = win.episodes_panel.store.path("episode_0")
    seed = read_info(ep_path).sim_seed
    folder = make_replay_policy(ep_path, tmp / "runs" / "cube_replay" / "policy")
    tp = win.trials_panel
    win.train_panel.policy_chosen.emit(str(folder))  # as "Use in trials" does
    tp.device.setCurrentText("cpu")
    tp.trials.setValue(1)
    tp.time_limit.setValue(4.0)
    tp.seeds.setText(f"{seed + 5}")
    if not tp.start():
        raise RuntimeError(f"trials did not start: {win.banner.current}")
    wait(lambda: tp.state == "finished", 240, "first session")
    win._pages[tp].verticalScrollBar().setValue(0)
    shot("trials_setup")  # the policy (its long path elided in the middle), the settings, the first session's end
    tp.trials.setValue(2)
    tp.time_limit.setValue(12.0)
    tp.seeds.setText(f"{seed},{seed + 1}")
    if not tp.start():
        raise RuntimeError(f"the second session did not start: {win.banner.current}")
    wait(lambda: tp.state == "running", 180, "policy server")
    wait(lambda: tp.trials_model.rowCount() == 2 and len(tp.latencies) >= 3, 240, "second trial")
    tp.command.setText("hand the cube over slowly")
    tp.send_command()
    pause(1.5)
    win.live.plots.set_side("right")  # the arm that moves first in the hand-over
    page = win._pages[tp]  # the controls, the first trial's outcome and the results (the settings are above)
    page.verticalScrollBar().setValue(tp.run_box.y() - 6)
    pause(1.0)
    shot("trials")
    tp.stop()
    wait(lambda: tp.state == "finished", 120, "trials stop")
    page.verticalScrollBar().setValue(page.verticalScrollBar().maximum())  # the results and this session's trials
    shot("trials_done")


def train(win, wait, shot) -> None:
    """Train: the tiny model on the recorded episodes, cancelled after a few steps (a checkpoint, the run listed
    stopped and selected, Resume and "Use in trials" on)."""
    from finetune import events as ev

    tr = win.train_panel
    win.show_tab(tr)
    tr.dataset.setText(win.record_panel.dataset_dir())
    tr.outcome_f.setCurrentIndex(max(0, tr.outcome_f.findData("all")))  # two demonstrations, one labelled
    tr.preset.setCurrentIndex(max(0, tr.preset.findData("tiny")))
    tr.steps.setValue(100_000)
    tr.name.setText("cube_tiny")
    tr.extra_args = ("--workers", "0", "--log-every", "2")
    tr.train_btn.click()
    wait(lambda: isinstance(tr.last_event, ev.Step) and tr.last_event.step >= 6, 300, "training steps")
    tr.cancel_btn.click()
    wait(lambda: not tr.is_running(), 120, "cancel")
    shot("train")  # the form
    page = win._pages[tr]
    page.verticalScrollBar().setValue(page.verticalScrollBar().maximum())  # progress, the runs, Resume
    shot("train_cancelled")


if __name__ == "__main__":
    sys.exit(main())
