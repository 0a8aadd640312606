"""Export from the Episodes tab runs off the GUI thread with a progress bar and can be cancelled; a cancel leaves
no partial dataset and tells the operator so."""
from __future__ import annotations

from PyQt6.QtCore import Qt

from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, tick


def test_export_progress_then_cancel(qtbot, window, tmp_path):
    store = DatasetStore(tmp_path / "data")
    for _ in range(3):
        w = store.new_episode(CAMS, task="stack the cups", control_hz=50)
        for i in range(120):
            w.append(tick(i))
        w.stop()
    ep = window.episodes_panel
    window.show_tab(ep)
    ep.set_dataset(str(tmp_path / "data"))
    qtbot.waitUntil(lambda: ep.model.rowCount() == 3, timeout=10000)
    out = tmp_path / "lerobot"
    ep.export_dir.setText(str(out))
    ep.export_scope.setCurrentText("shown episodes")  # unlabeled episodes: not in the default "successes" preset
    job = ep.export()
    assert ep.progress.isVisible() and ep.progress.cancel.isVisible()
    # the operator cancels while it runs (the job checks at every episode of every camera)
    qtbot.mouseClick(ep.progress.cancel, Qt.MouseButton.LeftButton)
    assert "cancelling" in ep.progress.label.text()
    qtbot.waitUntil(lambda: job.done, timeout=60000)
    assert job.result is None and job.error is None  # cancelled, not failed
    qtbot.waitUntil(lambda: window.banner.current is not None and "cancelled" in window.banner.current.title.lower(),
                    timeout=5000)
    assert not out.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
