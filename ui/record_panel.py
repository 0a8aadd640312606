"""Record tab (placeholder until workbench.recording lands)."""
from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QLabel, QVBoxLayout, QWidget


class RecordPanel(QWidget):
    recordingChanged = pyqtSignal(str, str)
    datasetChanged = pyqtSignal(str)

    def __init__(self, controller, jobs, settings, dataset_dir=None, parent=None):
        super().__init__(parent)
        self.ctl, self.jobs, self.settings = controller, jobs, settings
        self._dataset = dataset_dir or str(settings.value("record/dataset", "") or "")
        QVBoxLayout(self).addWidget(QLabel("Recording: coming"))

    def dataset_dir(self):
        return self._dataset

    def update_live(self, tick):
        pass

    def poll(self):
        pass

    def on_estop(self):
        pass

    def shutdown(self):
        pass
