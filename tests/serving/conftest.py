"""tests/serving uses tests/finetune's helpers (serve_helpers.tiny_policy, train_helpers.sim_dataset)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
