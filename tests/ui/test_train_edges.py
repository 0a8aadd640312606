"""Train tab edges (issue 21): the base field follows the preset, a machine without a GPU starts on a CPU preset and
says why, a failed run (the base unreachable offline) is listed "failed" with its error in a banner, the wheel over
the loss plot scrolls the tab instead of zooming the plot, successes only by default (as `workbench train`), and
nothing clipped at the window's default 1280x800."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QPoint, QPointF, QSettings, Qt
from PyQt6.QtGui import QWheelEvent
from PyQt6.QtWidgets import QApplication, QLabel, QScrollArea

from finetune import events as ev
from finetune import presets

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, RANDOM_BASE_TEXT, TrainPanel  # noqa: E402


def index(name: str) -> int:
    return next(i for i, p in enumerate(PRESETS) if p.name == name)


def make_panel(qtbot, tmp_path, **kw) -> TrainPanel:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    p = TrainPanel(settings, runs_root=tmp_path / "runs", **kw)
    qtbot.addWidget(p)
    return p


def test_the_base_field_follows_the_preset(qtbot, tmp_path):
    """A random-init preset has no base: the field says random weights and is disabled (it read lerobot/pi0_base
    while the run used random weights); a pi0 preset puts its base back."""
    panel = make_panel(qtbot, tmp_path, has_gpu=True)
    for name in ("tiny", "small", "pi05-tiny"):
        panel.preset.setCurrentIndex(index(name))
        assert panel.base.currentText() == RANDOM_BASE_TEXT and not panel.base.isEnabled(), name
        assert not panel.download_base_btn.isEnabled()
    panel.preset.setCurrentIndex(index("pi0-lora"))
    assert panel.base.currentText() == presets.PI0_BASE and panel.base.isEnabled()
    panel.preset.setCurrentIndex(index("pi05"))
    assert panel.base.currentText() == presets.PI05_BASE


def test_without_a_gpu_the_tab_starts_on_a_cpu_preset_and_says_why(qtbot, tmp_path):
    cpu = make_panel(qtbot, tmp_path, has_gpu=False)
    chosen = PRESETS[cpu.preset.currentIndex()]
    assert chosen.name == presets.CPU_DEFAULT and chosen.random_init and chosen.precision == "fp32"
    assert cpu.gpu_note.isVisibleTo(cpu) and cpu.gpu_note.text().startswith("no GPU found")
    assert "learns on a CPU" in cpu.gpu_note.text()
    cpu.preset.setCurrentIndex(index("pi0-lora"))  # a card's preset on this machine: said in warning colour
    assert "font-weight" in cpu.gpu_note.styleSheet()

    gpu = make_panel(qtbot, tmp_path / "gpu", has_gpu=True)
    assert PRESETS[gpu.preset.currentIndex()].name == "pi0-lora" and not gpu.gpu_note.isVisibleTo(gpu)

    from finetune import memory_model

    probed = make_panel(qtbot, tmp_path / "probed")  # this machine, asked through nvidia-smi
    assert probed.has_gpu == (memory_model.cuda_memory_nvidia_smi() is not None)


def test_training_takes_successes_by_default_in_the_tab_and_the_cli(qtbot, tmp_path):
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    panel = make_panel(qtbot, tmp_path, has_gpu=True)
    panel.dataset.setText(str(tmp_path / "cube"))
    assert panel.outcome_f.currentData() == "success" and "default" in panel.outcome_note.text()

    def outcomes(argv: list[str]) -> list[str]:
        return config_from_args(build_parser().parse_args(["train", *argv])).data.get("outcomes", [])

    assert outcomes(panel.request().argv()) == ["success"]
    assert outcomes(["--dataset", "x", "--out", "y"]) == ["success"]  # the CLI's default is the same
    panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))
    assert "failed episodes are trained on too" in panel.outcome_note.text()
    argv = panel.request().argv()
    assert argv[argv.index("--outcome") + 1] == "all" and outcomes(argv) == []
    with pytest.raises(SystemExit, match="does not combine"):
        outcomes(["--dataset", "x", "--out", "y", "--outcome", "all", "--outcome", "failure"])
    helped = io.StringIO()
    with contextlib.redirect_stdout(helped), pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "'all' for every label [default: success" in " ".join(helped.getvalue().split())


def test_a_run_that_cannot_get_its_base_is_listed_failed_with_its_error_shown(qtbot, tmp_path, monkeypatch):
    """Offline, a base that is not in the cache: the run fails before building anything; the error is in a banner
    (not only the status line), the run is listed "failed" (not "stopped"), and there is nothing to resume."""
    from ui import theme

    for k, v in {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(k, v)
    panel = make_panel(qtbot, tmp_path, has_gpu=True, extra_args=("--workers", "0"))
    try:
        panel.dataset.setText(str(sim_dataset()))
        panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))
        panel.preset.setCurrentIndex(index("pi0-lora"))
        panel.base.setCurrentText("lab/nowhere")
        panel.name.setText("offline")
        panel.train_btn.click()
        qtbot.waitUntil(lambda: not panel.is_running() and isinstance(panel.last_event, ev.Finished),
                        timeout=120_000)
        assert panel.last_event.reason == "error"
        banner = panel.error_l.text()
        assert panel.error_l.isVisibleTo(panel) and "lab/nowhere" in banner and "failed" in banner, banner
        item = panel.runs.topLevelItem(0)
        assert item.text(0) == "offline" and item.text(2) == "failed"
        assert item.foreground(2).color().name() == theme.FAIL and "lab/nowhere" in item.toolTip(2)
        assert panel.selected_run() == panel.runs_root / "offline"
        assert not panel.resume_btn.isEnabled() and not panel.use_btn.isEnabled() and panel.eta_l.text() == "–"
    finally:
        panel.shutdown()


def _wheel(widget, steps: int = -3) -> None:
    """A mouse-wheel turn (down) at the widget's centre, delivered as Qt delivers a real one: to the widget under
    the pointer, then up its parents until one accepts it (QApplication::notify propagates only spontaneous wheel
    events, which a test cannot make)."""
    where = QPointF(widget.mapToGlobal(widget.rect().center()))
    w = widget
    while w is not None:
        event = QWheelEvent(w.mapFromGlobal(where), where, QPoint(0, 0), QPoint(0, 120 * steps),
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                            False)
        if QApplication.sendEvent(w, event) and event.isAccepted() or w.isWindow():  # notify's own test
            return
        w = w.parentWidget()


def test_the_wheel_over_the_loss_plot_scrolls_the_tab_and_leaves_the_plot_alone(qtbot, tmp_path):
    panel = make_panel(qtbot, tmp_path, has_gpu=True)
    page = QScrollArea()  # as the app hosts the tab
    page.setWidget(panel)
    page.setWidgetResizable(True)
    page.resize(480, 600)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.2), (4, 1.0)):
        panel._on_event(ev.Step(step, loss, 1e-3, 1.0, 10.0, 5.0, 1.0))
    page.ensureWidgetVisible(panel.plot)
    view = panel.plot.getViewBox()

    def fitted() -> bool:  # auto-range applies on a later update: the curve's steps 1..4, losses 1..2 in view
        (x0, x1), (y0, y1) = view.viewRange()
        return x0 <= 1 and x1 >= 4 and y0 <= 1 and y1 >= 2 and x1 - x0 < 6 and y1 - y0 < 3

    qtbot.waitUntil(fitted, timeout=5_000)
    before_scroll = page.verticalScrollBar().value()
    assert 0 < before_scroll < page.verticalScrollBar().maximum()
    _wheel(panel.plot.viewport())
    qtbot.wait(50)
    assert page.verticalScrollBar().value() > before_scroll  # the page moved
    assert fitted(), view.viewRange()  # the plot did not zoom: still the curve's range
    assert all(view.autoRangeEnabled())
    assert "step" in panel.plot.getAxis("bottom").labelText and "normalized" in panel.plot.getAxis("left").labelText


def test_nothing_is_clipped_at_the_default_window_size(qtbot, window):
    """At 1280x800 the Train tab fits its column (no form row cut off on the right: the page does not scroll
    sideways), the runs list's headers are whole (it read "run / checkp"), and no one-line label is cut."""
    from PyQt6.QtWidgets import QGroupBox

    assert (window.width(), window.height()) == (1280, 800)
    panel = window.train_panel
    window.show_tab(panel)
    qtbot.wait(100)
    page = window._pages[panel]
    assert panel.width() <= page.viewport().width(), (panel.width(), page.viewport().width())
    header = panel.runs.header()
    for c in range(header.count()):
        assert header.sectionSize(c) >= header.sectionSizeHint(c), (c, header.sectionSize(c))
    for box in panel.findChildren(QGroupBox):
        assert box.geometry().right() <= panel.width(), box.title()
    cut = [lab.text() for lab in panel.findChildren(QLabel)
           if lab.isVisibleTo(panel) and not lab.wordWrap() and lab.width() < lab.sizeHint().width()]
    assert not cut, cut
    for name in ("small", "pi0-lora", "pi05-lora"):  # the base field's text whole, random weights or a hub id
        panel.preset.setCurrentIndex(index(name))
        field = panel.base.lineEdit()
        assert field.fontMetrics().horizontalAdvance(field.text()) < field.width(), (name, field.text())
