"""Synthetic training data (`--dataset synthetic`: benchmarks, tests): random observations with learnable actions.

Same interface as `finetune.data.TrainingData` (iterator(start_step), val_batches(), save(folder), norm_stats,
fingerprint); `finetune.data.open_training_data` picks it for the source name SYNTHETIC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from finetune.model.pi0 import Observation
from finetune.model_config import Pi0Config

SYNTHETIC = "synthetic"


class SyntheticData:
    """Actions are a fixed function of the state (so the loss can fall); sample i of the stream depends only on
    (seed, i), so a resumed run at step s sees what an uninterrupted one did, and W ranks see one process's
    stream at the combined batch."""

    def __init__(self, config: Pi0Config, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.config, self.b, self.seed, self.rank, self.world = config, batch_size, seed, rank, world
        self.norm_stats = None
        self.fingerprint = SYNTHETIC

    def _samples(self, positions: Iterable[int]) -> dict[str, Any]:
        from finetune.model.pi0 import random_observation

        obs, acts = [], []
        for pos in positions:
            g = torch.Generator().manual_seed(self.seed * 7_919 + pos)
            o = random_observation(self.config, 1, generator=g, prompt_len=5)
            obs.append(o)
            w = torch.linspace(-1, 1, self.config.action_horizon)[:, None]
            acts.append(torch.tanh(o.state[:, None, :] * (1 + w)))
        cat = lambda xs: torch.cat(xs)  # noqa: E731
        ob = Observation(images={k: cat([o.images[k] for o in obs]) for k in obs[0].images},
                         image_masks={k: cat([o.image_masks[k] for o in obs]) for k in obs[0].image_masks},
                         tokens=cat([o.tokens for o in obs]), token_mask=cat([o.token_mask for o in obs]),
                         state=cat([o.state for o in obs]))
        a = cat(acts)
        return {"observation": ob, "actions": a,
                "action_is_pad": torch.zeros(a.shape[:2], dtype=torch.bool)}

    def iterator(self, start_step: int) -> Iterator[dict[str, Any]]:
        step = start_step
        while True:
            first = step * self.b * self.world + self.rank * self.b
            yield self._samples(range(first, first + self.b))
            step += 1

    def val_batches(self) -> Iterator[dict[str, Any]]:
        for i in range(2):
            first = 10 ** 9 + (i * self.world + self.rank) * self.b
            yield self._samples(range(first, first + self.b))

    def save(self, folder: Path) -> None:
        (Path(folder) / "dataset.json").write_text(json.dumps({"source": SYNTHETIC}) + "\n")


__all__ = ["SYNTHETIC", "SyntheticData"]
