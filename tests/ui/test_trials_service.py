"""`workbench trials` and the Trials tab are thin front ends over one service (workbench.deploy.trials_service): from
the same inputs -- the rig file, a served replay policy of a recorded demonstration, two seeded trials, the time
limit, no prompt and no dataset given (the defaults: the policy's training task, `<data root>/trials/<policy>`), the
same data root -- both write the same trial folder with the same episodes and trial records. Real components
throughout: the MuJoCo rig, the policy server child process, the app offscreen and the CLI's own entry point."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.conftest import connect
from tests.ui.test_trials_panel import _record_demo


def _folder(root: Path) -> dict:
    """What a trial folder holds, less what differs between two runs by nature (times, latencies, session ids)."""
    from recorder.reader import read_info
    from workbench.deploy.trial_stats import load_trials

    records = sorted((t.name, t.policy_id, t.checkpoint, t.prompt, t.mode, t.outcome, t.ended_by, t.seed,
                      t.interventions) for t in load_trials(root))
    episodes = {}
    for t in records:
        info = read_info(root / f"{t[0]}.hdf5")
        trial = info.trial
        episodes[t[0]] = (info.task, info.sim_seed, info.outcome, sorted(info.cameras), info.rig_config,
                          {k: trial[k] for k in ("trial_index", "policy", "policy_id", "checkpoint", "mode",
                                                 "execute_steps", "ensemble", "delay_ticks", "seed", "ended_by",
                                                 "outcome_source")},
                          [(p["text"], p["source"]) for p in trial["prompts"]])
    return {"files": sorted(p.name for p in root.iterdir()), "records": records, "episodes": episodes}


@pytest.mark.system  # end to end through a child process: CI's system step (README)
@pytest.mark.timeout(900)
def test_the_cli_and_the_trials_tab_make_the_same_trials(qtbot, window, rig_file, tmp_path, capsys):
    from workbench.cli import main as cli
    from workbench.deploy.trials_service import default_dataset

    win = window
    connect(qtbot, win)
    folder, seed = _record_demo(qtbot, win, tmp_path)  # the Record tab's dataset: tmp_path/dataset
    data_root = Path(win.record_panel.dataset_dir()).parent
    assert data_root == tmp_path
    seeds = f"{seed},{seed + 1000}"  # trial 1: the demonstration's scene (success); trial 2: another one

    # the Trials tab: no prompt, no dataset typed
    tp = win.trials_panel
    win.show_tab(tp)
    tp.set_policy(str(folder))
    tp.prompt.clear()
    tp.dataset.clear()
    tp.trials.setValue(2)
    tp.time_limit.setValue(10.0)
    tp.seeds.setText(seeds)
    tp.device.setCurrentText("cpu")
    assert tp.mode.currentData() == "sync" and tp.execute_steps.value() == 25 and tp.takeover.isChecked()
    assert tp.start()
    qtbot.waitUntil(lambda: tp.state == "finished", timeout=300_000)
    pid = tp.runner.policy_id
    gui_dir = Path(tp.dataset_dir())
    assert gui_dir == default_dataset(pid, data_root) == tmp_path / "trials" / pid.replace("@", "_")
    assert tp.prompt.text() == "" and "“transfer the cube”" in tp.prompt.placeholderText()  # the default, shown
    gui = _folder(gui_dir)
    # the GUI lets the rig go, and its trials make room: the CLI's default folder is the same one
    win.ctl.disconnect_rig()
    qtbot.waitUntil(lambda: win.ctl.session is None, timeout=60_000)  # the GUI has heard of it
    (tmp_path / "trials").rename(tmp_path / "gui_trials")

    # `workbench trials`, the same inputs as flags (the data root: where the GUI's recording dataset is)
    capsys.readouterr()
    rc = cli(["trials", "--rig", rig_file, "--policy", str(folder), "--trials", "2", "--seeds", seeds,
              "--time-limit-s", "10", "--device", "cpu", "--data-root", str(data_root)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"episodes in {gui_dir}" in out  # the same default folder
    cli_dir = gui_dir
    assert cli_dir.is_dir()
    cli_res = _folder(cli_dir)

    assert [r[5] for r in gui["records"]][0] == "success" and gui["records"][1][5] != "success", gui["records"]
    assert [(r[1], r[3], r[7]) for r in gui["records"]] == [(pid, "transfer the cube", seed),
                                                            (pid, "transfer the cube", seed + 1000)]
    assert cli_res["files"] == gui["files"]
    assert cli_res["records"] == gui["records"]
    assert cli_res["episodes"] == gui["episodes"]
    assert gui["episodes"][gui["records"][0][0]][5]["policy"] == str(folder)
