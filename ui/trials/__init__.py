"""The Trials tab: `panel` (widgets and wiring over workbench.deploy.trials_service), `models` (its tables)."""
from ui.trials.panel import TrialsPanel

__all__ = ["TrialsPanel"]
