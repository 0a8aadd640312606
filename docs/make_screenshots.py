"""Screenshots of the app's screens, taken from a real window on a virtual screen (Xvfb), for the README.

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb python docs/make_screenshots.py      # writes docs/screenshots/*.png

It drives the app as an operator would, on the simulated rig: connect, teleoperate, record two episodes with a
segment marked, then review one in the Episodes tab, then run trials of a replay policy of that episode.
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
    win = create_window("sim-transfer-cube", settings=settings, dataset_dir=str(tmp / "cube"))
    win.resize(1440, 900)
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
    if hasattr(win, "train_panel"):
        win.show_tab(win.train_panel)
        shot("train")
    if hasattr(win, "trials_panel"):
        trials(win, tmp, wait, pause, shot)
    win.close()
    return 0


def trials(win, tmp: Path, wait, pause, shot) -> None:
    """Trials: a replay policy of the first recorded episode (served by a local child server) runs two trials;
    the shot shows the second running, with the first one's result, the latency and the predicted chunk."""
    from finetune.replay_policy import make_replay_policy
    from recorder.reader import read_info

    ep_path = win.episodes_panel.store.path("episode_0")
    seed = read_info(ep_path).sim_seed
    folder = make_replay_policy(ep_path, tmp / "runs" / "cube_replay" / "policy")
    tp = win.trials_panel
    win.train_panel.policy_chosen.emit(str(folder))  # as "Use in trials" does
    tp.trials.setValue(2)
    tp.time_limit.setValue(12.0)
    tp.seeds.setText(f"{seed},{seed + 1}")
    tp.device.setCurrentText("cpu")
    if not tp.start():
        raise RuntimeError(f"trials did not start: {win.banner.current}")
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


if __name__ == "__main__":
    sys.exit(main())
