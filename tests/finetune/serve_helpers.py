"""A tiny trained policy folder (two steps of pi0_tiny on episodes recorded on the sim rig), once per session."""
from __future__ import annotations

import tempfile
from pathlib import Path

_POLICY: dict[str, Path] = {}


def tiny_policy() -> Path:
    if "p" not in _POLICY:
        from finetune import train as T
        from finetune.precision import OptimConfig
        from train_helpers import sim_dataset

        out = Path(tempfile.mkdtemp(prefix="tiny_policy_")) / "run"
        cfg = T.TrainConfig(dataset=str(sim_dataset()), out=str(out), base="random", model="pi0_tiny",
                            precision="fp32", gradient_checkpointing=False, steps=2, batch_size=2, num_workers=0,
                            val_every=0, save_every=2, log_every=1, optim=OptimConfig(warmup_steps=0, decay_steps=2))
        _POLICY["p"] = T.train(cfg)
    return _POLICY["p"]
