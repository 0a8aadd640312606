"""Background jobs: everything slow (connect, save, export, upload) runs on a worker thread.

A job is a plain function `fn(ctx)`; `ctx.progress(text, fraction)` reports, `ctx.cancelled` / `ctx.check()`
let it stop early. Results, progress and errors come back as Qt signals, delivered on the GUI thread.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QWidget

from ui.widgets import ElidedLabel

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a job by ctx.check() once the operator pressed Cancel."""


class JobContext:
    def __init__(self, job: "Job"):
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the operator presses Cancel: for services that take a stop Event (e.g. replay)."""
        return self._job._cancel

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled()

    def progress(self, text: str = "", fraction: float | None = None) -> None:
        self._job.progress.emit(text, -1.0 if fraction is None else float(fraction))


class Job(QObject):
    progress = pyqtSignal(str, float)  # text, fraction 0..1 (-1: unknown)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)  # the exception
    cancelled = pyqtSignal()
    finished = pyqtSignal()  # after any of the three above

    def __init__(self, title: str, fn: Callable[[JobContext], Any], cancellable: bool = False):
        super().__init__()
        self.title, self.fn, self.cancellable = title, fn, cancellable
        self._cancel = threading.Event()
        self.running = False
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def cancel(self) -> None:
        self._cancel.set()

    def _run(self) -> None:
        ctx = JobContext(self)
        try:
            self.result = self.fn(ctx)
        except Cancelled:
            self.done = True
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - reported to the GUI, never lost
            self.error = exc
            self.done = True
            log.debug("job %s failed", self.title, exc_info=True)
            self.failed.emit(exc)
        else:
            self.done = True
            if self._cancel.is_set() and self.cancellable:
                self.cancelled.emit()
            else:
                self.succeeded.emit(self.result)
        finally:
            self.running = False
            self.finished.emit()


class _Runnable(QRunnable):
    def __init__(self, job: Job):
        super().__init__()
        self.job = job
        self.setAutoDelete(False)

    def run(self) -> None:
        self.job._run()


class JobRunner(QObject):
    """Runs jobs on a small thread pool and keeps them alive until they finish."""

    jobStarted = pyqtSignal(object)

    def __init__(self, parent=None, threads: int = 3):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._active: dict[Job, _Runnable] = {}

    def submit(self, title: str, fn: Callable[[JobContext], Any], *, cancellable: bool = False,
               on_success: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None,
               on_progress: Callable[[str, float], None] | None = None) -> Job:
        job = Job(title, fn, cancellable)
        if on_success:
            job.succeeded.connect(on_success)
        if on_error:
            job.failed.connect(on_error)
        if on_progress:
            job.progress.connect(on_progress)
        runnable = _Runnable(job)
        self._active[job] = runnable
        job.finished.connect(lambda j=job: self._active.pop(j, None))
        job.running = True
        self.jobStarted.emit(job)
        self.pool.start(runnable)
        return job

    @property
    def active(self) -> list[Job]:
        return list(self._active)

    def wait(self, msecs: int = 30000) -> bool:
        return self.pool.waitForDone(msecs)


class JobProgress(QWidget):
    """Progress bar + text + Cancel for one job at a time; hides itself when idle."""

    def __init__(self, parent=None, compact: bool = False):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = ElidedLabel()  # a long progress text is cut (whole in the tooltip), never widens the tab
        self.label.setProperty("class", "muted")
        self.bar = QProgressBar()
        self.bar.setMinimumWidth(160 if compact else 240)
        self.bar.setTextVisible(True)
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self._cancel)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel)
        self.job: Job | None = None
        self.hide()

    def track(self, job: Job) -> None:
        self.job = job
        self.label.setText(job.title)
        self.bar.setRange(0, 0)
        self.cancel.setVisible(job.cancellable)
        self.cancel.setEnabled(True)
        job.progress.connect(self._on_progress)
        job.finished.connect(self._on_finished)
        self.show()

    def _on_progress(self, text: str, frac: float) -> None:
        if text:
            self.label.setText(f"{self.job.title if self.job else ''}: {text}")
        if frac < 0:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(frac * 1000))

    def _cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel.setEnabled(False)
            self.label.setText(f"{self.job.title}: cancelling…")

    def _on_finished(self) -> None:
        if self.sender() is self.job:
            self.job = None
            self.hide()
