"""Training data for pi0: selected episodes -> seeded, resumable, distributed batches of normalized model inputs.

The one entry point for the trainer::

    data = build_training_data(cfg: DataConfig, model_config: Pi0Config, tokenizer: PromptTokenizer,
                               *, batch_size: int, num_workers: int, seed: int, rank: int = 0, world_size: int = 1)
    for batch in data.iterator(start_step):        # infinite; batch i is global step start_step + i
        obs: Observation = batch["observation"]    # images [B,3,S,S] in [-1,1], masks, tokens, state [B,32]
        batch["actions"]                           # FloatTensor [B, 50, 32] normalized model space
        batch["action_is_pad"]                     # BoolTensor [B, 50]: True past the episode end (no loss there)
        batch["state_rig"], batch["actions_rig"]   # [B,14] / [B,50,14] rig units (for per-joint action errors)
        batch["episode_index"], batch["frame_index"]   # LongTensor [B] (position in data.episodes, step)
    for batch in data.val_batches():                # finite, deterministic, no augmentation (empty without val)
        ...
    data.transforms(tokenizer) -> PolicyTransforms  # the same chain for serving: .observation(...) / .actions(...)
    data.save(policy_dir)                           # norm_stats.json, transforms.json, dataset.json, rig.json

`batch_size` is per rank. At global step s, rank r gets global sample positions s*B*W + r*B + [0, B): the union
over ranks equals one process at batch B*W, and `iterator(s)` continues exactly where a run stopped at step s.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

PromptMode = Literal["task", "segment", "mix"]
LowStdPolicy = Literal["error", "fix"]


@dataclass(frozen=True)
class DataConfig:
    """What to train on and how to present it; JSON-serializable (it goes into the run folder).

    source: our dataset folder (HDF5 episodes, imported ALOHA ones included), a LeRobot v3.0 folder, or a hub
    dataset id (downloaded with huggingface-hub). Selection is export's: outcomes / quality / episode names, trash
    excluded; empty = no filter. prompt: "task" (the episode's prompt), "segment" (the covering segment's text,
    else the task) or "mix" (segment text with probability prompt_mix_p). low_std: what to do with near-constant
    state/action dims ("error": refuse naming the joints; "fix": z-score them with std 1, i.e. centre only, and warn).
    """

    source: str
    outcomes: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    episodes: tuple[str, ...] = ()
    val_fraction: float = 0.1
    val_episodes: tuple[str, ...] | None = None  # an explicit split (resume, reproduce a run) instead of the seeded one
    split_seed: int = 0
    prompt: PromptMode = "task"
    prompt_mix_p: float = 0.5
    augment: bool = True
    adapt_to_pi: bool = True
    delta_actions: bool = True
    low_std: LowStdPolicy = "fix"
    val_max_samples: int = 256
    revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "DataConfig":
        kw = dict(d)
        for k in ("outcomes", "quality", "episodes"):
            kw[k] = tuple(kw.get(k) or ())
        if kw.get("val_episodes") is not None:
            kw["val_episodes"] = tuple(kw["val_episodes"])
        return DataConfig(**kw)
