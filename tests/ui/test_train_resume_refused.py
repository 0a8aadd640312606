"""Train tab: Resume on a run whose dataset changed since it started shows the trainer's refusal (which episodes,
and the two fixes) as the run's failure, in the error banner and the runs list."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from data_helpers import record_sim  # noqa: E402
from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, TrainPanel  # noqa: E402


@pytest.mark.system  # end to end through a child process: CI's system step (README)
def test_resume_on_a_changed_dataset_shows_the_refusal(qtbot, tmp_path):
    ds = Path(shutil.copytree(sim_dataset(), tmp_path / "cube"))
    run = tmp_path / "runs" / "cube"
    panel = TrainPanel(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat),
                       runs_root=tmp_path / "runs", extra_args=("--workers", "0", "--log-every", "1"))
    qtbot.addWidget(panel)
    try:
        panel.dataset.setText(str(ds))
        panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))  # the sim episodes are failures
        panel.preset.setCurrentIndex(next(i for i, p in enumerate(PRESETS) if p.name == "tiny"))
        panel.steps.setValue(100_000)
        panel.train_btn.click()
        qtbot.waitUntil(lambda: isinstance(panel.last_event, ev.Step), timeout=120_000)
        panel.cancel_btn.click()  # a stopped run: Resume applies
        qtbot.waitUntil(lambda: not panel.is_running() and isinstance(panel.last_event, ev.Finished),
                        timeout=60_000)
        record_sim(ds, episodes=1, seconds=2.0, seed=1)  # episode_3, added after the run started

        assert panel.selected_run() == run and panel.resume_btn.isEnabled()
        panel.resume_btn.click()
        qtbot.waitUntil(lambda: not panel.is_running() and isinstance(panel.last_event, ev.Finished),
                        timeout=120_000)
        assert panel.status.text().startswith("failed (dataset_changed)"), panel.status.text()
        text = panel.error_l.text()  # the refusal, readable in the banner
        assert panel.error_l.isVisibleTo(panel) and "(dataset_changed)" in text, text
        assert "1 episode added (episode_3)" in text and "--keep-run-data" in text and "new --out" in text, text
        assert panel.runs.topLevelItem(0).text(2) == "failed, policy ready"  # its policy from the cancel stays
    finally:
        panel.shutdown()
