"""Train tab: Resume on a run whose dataset changed since it started shows the trainer's refusal (which episodes,
and the two fixes) as the run's failure text; the tab needs nothing of its own for it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PyQt6.QtCore import QSettings

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from data_helpers import record_sim  # noqa: E402
from train_helpers import TINY_ARGS, run_cli, sim_dataset  # noqa: E402
from ui.train_panel import TrainPanel  # noqa: E402


def test_resume_on_a_changed_dataset_shows_the_refusal(qtbot, tmp_path):
    ds = Path(shutil.copytree(sim_dataset(), tmp_path / "cube"))
    run = tmp_path / "runs" / "cube"
    res = run_cli(*TINY_ARGS, "--dataset", str(ds), "--out", str(run), "--steps", "2", "--save-every", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    record_sim(ds, episodes=1, seconds=2.0, seed=1)  # episode_3, added after the run started

    panel = TrainPanel(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat),
                       runs_root=tmp_path / "runs", extra_args=("--workers", "0"))
    qtbot.addWidget(panel)
    try:
        panel.refresh_runs()
        panel.select_run(run)
        assert panel.resume_btn.isEnabled()
        panel.resume_btn.click()
        qtbot.waitUntil(lambda: not panel.is_running() and isinstance(panel.last_event, ev.Finished),
                        timeout=120_000)
        text = panel.status.text()
        assert text.startswith("failed: ") and "1 episode added (episode_3)" in text, text
        assert "--keep-run-data" in text and "new --out" in text, text
    finally:
        panel.shutdown()
