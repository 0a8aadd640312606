"""What a policy folder says about itself without loading it: torch-free, so a front end can read it at once (the
Trials tab's default prompt) while the model itself loads in the server process."""
from __future__ import annotations

import json
from pathlib import Path

DATASET_FILE = "dataset.json"  # finetune.data writes it: the training episodes' fingerprint, split and tasks


def trained_task(folder: str | Path) -> str | None:
    """The most frequent task prompt of the training episodes (the trials' default prompt); None when the folder
    does not say (not a local policy folder, or trained on synthetic data)."""
    try:
        tasks = json.loads((Path(folder).expanduser() / DATASET_FILE).read_text()).get("tasks") or []
    except (OSError, ValueError, AttributeError):
        return None
    return str(tasks[0]) if tasks else None


__all__ = ["DATASET_FILE", "trained_task"]
