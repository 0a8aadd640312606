"""Tiny trained policy folders (two steps of pi0_tiny on episodes recorded on the sim rig), each built once per
session."""
from __future__ import annotations

import tempfile
from pathlib import Path

_POLICIES: dict[tuple, Path] = {}


def tiny_policy(**overrides) -> Path:
    """The policy folder; `overrides` are TrainConfig fields (e.g. rtc_max_delay=4), one folder per combination."""
    key = tuple(sorted(overrides.items()))
    if key not in _POLICIES:
        from finetune import train as T
        from finetune.precision import OptimConfig
        from train_helpers import sim_dataset

        out = Path(tempfile.mkdtemp(prefix="tiny_policy_")) / "run"
        cfg = T.TrainConfig(dataset=str(sim_dataset()), out=str(out), base="random", model="pi0_tiny",
                            precision="fp32", gradient_checkpointing=False, steps=2, batch_size=2, num_workers=0,
                            val_every=0, save_every=2, log_every=1, optim=OptimConfig(warmup_steps=0, decay_steps=2),
                            **overrides)
        _POLICIES[key] = T.train(cfg)
    return _POLICIES[key]
