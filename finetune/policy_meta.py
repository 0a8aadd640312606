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


def training_sim_seeds(folder: str | Path) -> list[int] | None:
    """The simulator seeds (scenes) of the episodes the policy was trained on, so trials can be held out from them:
    dataset.json's "sim_seeds" when training recorded them, else read from the training episodes themselves when
    their dataset folder is still where it was. [] when none was simulated; None when it cannot be known."""
    try:
        record = json.loads((Path(folder).expanduser() / DATASET_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("sim_seeds"), list):
        return sorted({int(s) for s in record["sim_seeds"]})
    source, names = record.get("source"), record.get("episodes")
    if not source or not isinstance(names, list) or not Path(str(source)).expanduser().is_dir():
        return None
    from recorder.reader import read_info

    seeds: set[int] = set()
    for name in names:
        try:
            seed = read_info(Path(str(source)).expanduser() / f"{name}.hdf5").sim_seed
        except Exception:  # noqa: BLE001 - a moved or damaged episode: what is there cannot be known for sure
            return None
        if seed is not None:
            seeds.add(int(seed))
    return sorted(seeds)


__all__ = ["DATASET_FILE", "trained_task", "training_sim_seeds"]
