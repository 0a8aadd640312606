"""Train tab, experiment tracking (issue 24): off by default; the TensorBoard and W&B check boxes (mode, project) put
`--track` / `--wandb-mode` / `--wandb-project` on the command line; a real tiny run from the tab writes RUN/tensorboard
(read back with TensorBoard's own EventAccumulator: the losses the tab plotted) and a W&B offline run in RUN/wandb,
and the tab shows the `tensorboard --logdir` and `wandb sync` commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, TrainPanel  # noqa: E402

TINY = next(i for i, p in enumerate(PRESETS) if p.name == "tiny")


@pytest.fixture
def settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def make_panel(qtbot, tmp_path, settings, **kw) -> TrainPanel:
    p = TrainPanel(settings, runs_root=tmp_path / "runs", has_gpu=False, **kw)
    qtbot.addWidget(p)
    return p


def test_tracking_is_off_by_default_and_the_boxes_are_the_clis_options(qtbot, tmp_path, settings):
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    panel = make_panel(qtbot, tmp_path, settings)
    panel.dataset.setText(str(tmp_path / "cube"))

    def tracking(argv):
        return config_from_args(build_parser().parse_args(["train", *argv])).tracking

    argv = panel.command_line()
    assert "--track" not in argv and not tracking(argv).on  # off: nothing written, nothing sent
    assert panel.track.note.text().startswith("Off: nothing is logged") and not panel.track.mode.isVisibleTo(panel)
    panel.track.tensorboard.setChecked(True)
    argv = panel.command_line()
    assert argv[-2:] == ["--track", "tensorboard"] and tracking(argv).backends == ("tensorboard",)
    assert "tensorboard/" in panel.track.note.text()
    panel.track.wandb.setChecked(True)
    assert panel.track.mode.isVisibleTo(panel) and panel.track.mode.currentText() == "offline"
    assert "sends nothing" in panel.track.note.text() and "wandb sync" in panel.track.note.text()
    assert panel.command_line()[-4:] == ["--track", "tensorboard", "--track", "wandb"]  # offline: the default
    panel.track.mode.setCurrentText("online")
    panel.track.project.setText("cube-lab")
    argv = panel.command_line()
    assert argv[-4:] == ["--wandb-mode", "online", "--wandb-project", "cube-lab"]
    cfg = tracking(argv)
    assert (cfg.backends, cfg.wandb_mode, cfg.wandb_project) == (("tensorboard", "wandb"), "online", "cube-lab")
    assert "streams the metrics to wandb.ai" in panel.track.note.text()
    panel.track.tensorboard.setChecked(False)
    panel.track.remember()
    again = make_panel(qtbot, tmp_path / "again", settings)  # remembered
    assert again.track.choice() == panel.track.choice()


@pytest.mark.system  # end to end through a child process: CI's system step (README)
def test_a_run_with_tensorboard_and_wandb_offline_writes_both_and_the_tab_says_where(qtbot, tmp_path, settings,
                                                                                     monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for k in [k for k in __import__("os").environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(k)
    for k, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_CACHE_DIR", "cache"),
                   ("WANDB_DATA_DIR", "data")):  # nothing written outside tmp, no login, no network
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(k, str(tmp_path / sub))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    panel = make_panel(qtbot, tmp_path, settings,
                       extra_args=("--workers", "0", "--log-every", "1", "--val-every", "0", "--device", "cpu"))
    panel.dataset.setText(str(sim_dataset()))
    panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))  # the sim episodes are failures
    panel.preset.setCurrentIndex(TINY)
    panel.steps.setValue(4)
    panel.batch.setValue(2)
    panel.name.setText("tracked")
    panel.track.tensorboard.setChecked(True)
    panel.track.wandb.setChecked(True)
    panel.train_btn.click()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=180_000)
    assert isinstance(panel.last_event, ev.Finished) and panel.last_event.reason == "done", panel.status.text()
    run = tmp_path / "runs" / "tracked"
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    loss = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    xs, ys = panel.loss_curve.getData()
    assert [s for s, _ in loss] == [1, 2, 3, 4] == list(xs)
    assert [v for _, v in loss] == pytest.approx(list(ys), rel=1e-6)  # what the tab plotted
    assert panel.tb_cmd.isVisibleTo(panel) and panel.tb_cmd.text() == f"tensorboard --logdir {run / 'tensorboard'}"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), offline
    run_id = offline[0].name.rsplit("-", 1)[1]
    assert panel.wandb_cmd.isVisibleTo(panel)
    assert panel.wandb_cmd.text() == f"wandb sync --id {run_id} {run / 'wandb'}/offline-run-*-{run_id}"
