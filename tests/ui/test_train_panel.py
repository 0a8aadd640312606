"""Train tab: a real training process (QProcess running `workbench train`) on episodes recorded on the simulated
rig, its loss in the plot, cancel (checkpoint then stop), resume, and "Use in trials"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, SETTINGS_POLICY, TrainPanel  # noqa: E402

TINY = next(i for i, p in enumerate(PRESETS) if p.name == "tiny")


@pytest.fixture
def panel(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    p = TrainPanel(settings, runs_root=tmp_path / "runs",
                   extra_args=("--workers", "0", "--log-every", "2", "--val-every", "10", "--save-every", "10",
                               "--val-fraction", "0.34"))
    qtbot.addWidget(p)
    yield p
    p.shutdown()


def test_the_tab_offers_every_preset_of_the_cli_and_selects_it_by_name(panel, tmp_path):
    from finetune import presets
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    assert [panel.preset.itemData(i) for i in range(panel.preset.count())] == list(presets.NAMES)
    assert "small" in presets.NAMES  # the model that learns on a CPU
    panel.dataset.setText(str(tmp_path / "cube"))
    for i, p in enumerate(presets.PRESETS):
        panel.preset.setCurrentIndex(i)
        assert (panel.steps.value(), panel.batch.value(), panel.preset_note.text()) == (p.steps, p.batch_size, p.note)
        assert panel.base.isEnabled() == (not p.random_init)
        panel.steps.setValue(p.steps + 1)
        argv = panel.request().argv()
        cfg = config_from_args(build_parser().parse_args(["train", *argv]))
        assert (cfg.model, cfg.base, cfg.lora, cfg.steps, cfg.batch_size) == (
            p.model, p.base, p.lora, p.steps + 1, p.batch_size), p.name
        assert argv[argv.index("--config") + 1] == p.name and "--batch" not in argv  # only what the form changed


def _finished(panel) -> bool:
    return not panel.is_running() and isinstance(panel.last_event, (ev.Finished, ev.Failed))


def test_train_end_to_end_shows_loss_and_hands_the_policy_to_trials(qtbot, panel):
    panel.dataset.setText(str(sim_dataset()))
    panel.preset.setCurrentIndex(TINY)
    assert (panel.steps.value(), panel.batch.value()) == (PRESETS[TINY].steps, PRESETS[TINY].batch_size)
    panel.steps.setValue(20)
    panel.name.setText("cube")
    seen: list[ev.Event] = []
    panel.event_received.connect(seen.append)
    panel.train_btn.click()
    assert panel.is_running() and not panel.train_btn.isEnabled() and panel.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: _finished(panel), timeout=180_000)
    assert isinstance(panel.last_event, ev.Finished) and panel.last_event.reason == "done", panel.status.text()
    steps = [e for e in seen if isinstance(e, ev.Step)]
    assert [s.step for s in steps][-1] == 20
    xs, ys = panel.loss_curve.getData()
    assert list(xs) == [s.step for s in steps] and list(ys) == [s.loss for s in steps]
    assert panel.loss_l.text() == f"{steps[-1].loss:.4f}" and panel.progress.value() == 20
    assert panel.val_curve.getData()[0] is not None and panel.val_l.text() != "–"
    assert panel.runs.topLevelItemCount() == 1 and panel.runs.topLevelItem(0).text(2) == "policy ready"

    chosen: list[str] = []
    panel.policy_chosen.connect(chosen.append)
    panel.select_run(panel.runs_root / "cube")
    assert panel.use_btn.isEnabled()
    panel.use_btn.click()
    assert chosen == [str(panel.runs_root / "cube" / "policy")]
    assert panel.settings.value(SETTINGS_POLICY) == chosen[0]


def test_cancel_checkpoints_then_resume_continues(qtbot, panel):
    panel.dataset.setText(str(sim_dataset()))
    panel.preset.setCurrentIndex(TINY)
    panel.steps.setValue(100_000)
    panel.name.setText("long")
    panel.train_btn.click()
    qtbot.waitUntil(lambda: isinstance(panel.last_event, ev.Step) and panel.last_event.step >= 4, timeout=120_000)
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: _finished(panel), timeout=60_000)
    assert panel.last_event.reason == "cancelled"
    stopped_at = panel.last_event.step
    run = panel.runs_root / "long"
    assert (run / "checkpoints" / f"step_{stopped_at:08d}" / "state.json").is_file()
    panel.select_run(run)
    assert panel.resume_btn.isEnabled()
    panel.resume_btn.click()
    qtbot.waitUntil(lambda: isinstance(panel.last_event, ev.Step) and panel.last_event.step >= stopped_at + 2,
                    timeout=120_000)
    started = [e for e in __import__("train_helpers").events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed and started[-1].start_step == stopped_at
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: _finished(panel), timeout=60_000)
