"""Training data for pi0: selected episodes -> seeded, resumable, distributed batches of normalized model inputs.

The one entry point for the trainer (`open_training_data` also takes the source "synthetic": finetune.synthetic_data)::

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

import collections
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from drivers.cameras.resize import resize_with_pad
from finetune.augment import Augmenter, sample_rng
from finetune.model_config import Pi0Config
from finetune.episode_set import EpisodeDataError, EpisodeSet
from finetune.episodes import (RIG_FILE, ALOHA_DIM_NAMES, TRIAL_MODES, EpisodeSplit, RigSnapshot, TrialsMode,
                               fingerprint, load_episodes, rig_snapshot, split_episodes)
from finetune.model.pi0 import Observation
from finetune.normalize import NormStats, load_norm_stats
from finetune.stats import compute_norm_stats
from finetune.tokenizer import PromptTokenizer
from finetune.transforms import PolicyTransforms, TransformConfig
from finetune.transforms.chunks import chunk_indices

DATASET_FILE = "dataset.json"
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

    trials: what trial episodes (policy rollouts, recorder.format.TRIAL_ATTR) contribute. "exclude" (default): none,
    a rollout is the policy's behaviour, not a demonstration. "corrections": only the steps inside their
    "correction" lane segments, where the operator drove the arms (HG-DAgger): a chunk starting there takes its
    action targets up to the span end, later targets are padding (no loss), so the loss sees operator actions
    only; trials without a correction span are left out. "all": every trial step (for imitating successful
    rollouts: combine with outcomes=("success",)). Demonstrations are used as usual in every mode. Norm stats are
    computed over every step of the training episodes, trials included.

    norm_stats_file: a norm_stats.json to normalize with instead of computing the statistics from the training
    episodes: with `episodes` and `val_episodes` it reproduces a run's data exactly (`workbench train --resume
    --keep-run-data` sets all three from the run's recorded data state, finetune.run_data).
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
    default_prompt: str = ""  # for episodes without a task prompt (imported ALOHA files); "" = refuse them
    revision: str | None = None
    trials: TrialsMode = "exclude"
    # Decode and resize every used frame once, up front, and keep them in RAM at the model's image size: for small
    # models on a CPU, where JPEG decode + resize cost more than the training step. Speed only (no effect on the
    # samples, which are augmented after resizing either way); refused when it would not fit in memory.
    cache_images: bool = False
    norm_stats_file: str | None = None

    def __post_init__(self) -> None:
        if self.prompt not in ("task", "segment", "mix"):
            raise ValueError(f"prompt must be 'task', 'segment' or 'mix', not {self.prompt!r}")
        if not 0.0 <= self.prompt_mix_p <= 1.0:
            raise ValueError(f"prompt_mix_p is a probability, not {self.prompt_mix_p}")
        if self.low_std not in ("error", "fix"):
            raise ValueError(f"low_std must be 'error' or 'fix', not {self.low_std!r}")
        if self.trials not in TRIAL_MODES:
            raise ValueError(f"trials must be one of {', '.join(TRIAL_MODES)}, not {self.trials!r}")
        for k in ("outcomes", "quality", "episodes"):
            object.__setattr__(self, k, tuple(getattr(self, k)))
        if self.val_episodes is not None:
            object.__setattr__(self, "val_episodes", tuple(self.val_episodes))

    def selection(self) -> dict[str, Any]:
        return {"outcomes": list(self.outcomes), "quality": list(self.quality), "episodes": list(self.episodes),
                "trials": self.trials}

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


# -- prompts ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompts:
    """The prompt of one frame: the task (default), the covering segment's text ("segment"; the task where no
    segment covers the frame), or per sample the segment text with probability mix_p ("mix")."""

    mode: PromptMode
    mix_p: float
    default: str

    def task(self, ep, t: int) -> str:
        if ep.frame_tasks is not None:
            return ep.frame_tasks[t] or self.default
        return ep.task or self.default

    def for_step(self, ep, t: int, rng: np.random.Generator) -> str:
        sub = ep.subtasks[t] if ep.subtasks is not None else None
        if self.mode == "segment":
            return sub or self.task(ep, t)
        if self.mode == "mix":
            use_segment = rng.random() < self.mix_p  # drawn every time: the stream does not depend on coverage
            return sub if (use_segment and sub) else self.task(ep, t)
        return self.task(ep, t)

    def candidates(self, ep) -> set[str]:
        out = set(ep.frame_tasks) if ep.frame_tasks is not None else {self.task(ep, 0)}
        if self.mode != "task" and ep.subtasks is not None:
            out |= {s for s in ep.subtasks if s}
        return {p or self.default for p in out}


def _check_prompts(es: EpisodeSet, cfg: DataConfig) -> None:
    if cfg.prompt != "task" and not any(e.subtasks and any(e.subtasks) for e in es.episodes):
        where = ("this LeRobot dataset has no per-frame subtask_index (meta/subtasks.parquet)" if es.kind == "lerobot"
                 else "annotate them (workbench episodes DIR annotate ...)")
        raise EpisodeDataError(f"prompt={cfg.prompt!r} but none of the selected episodes has segments: {where}; "
                               f"or use prompt='task'")
    missing = [e.id for e in es.episodes if not e.task and e.frame_tasks is None]
    if missing and not cfg.default_prompt:
        raise EpisodeDataError(f"episodes without a task prompt: {', '.join(missing[:10])}"
                               f"{' ...' if len(missing) > 10 else ''}; give DataConfig.default_prompt "
                               f"(e.g. 'transfer the cube') or leave them out (episodes=...)")


# -- dataset, samplers, loaders ---------------------------------------------------------------------------------

class FrameDataset(Dataset):
    """Frame (episode, step) -> one training sample; keys are (sample index, epoch) from the samplers below.
    Holds no tokenizer (prompts are tokenized once up front) and no open files until a worker reads one."""

    def __init__(self, es: EpisodeSet, ep_of: np.ndarray, t_of: np.ndarray, transforms: PolicyTransforms,
                 tokens: Mapping[str, tuple[np.ndarray, np.ndarray]], prompts: Prompts, augment: bool,
                 seed: int, end_of: np.ndarray | None = None) -> None:
        self.episodes, self.frames = es.episodes, es.frames
        self.ep_of, self.t_of = ep_of, t_of
        self.end_of = end_of  # per sample: action targets end here (a correction span's end); None: episode ends
        self.pt, self.tokens, self.prompts = transforms, dict(tokens), prompts
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.ep_of)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        i, epoch = key
        e, t = int(self.ep_of[i]), int(self.t_of[i])
        ep = self.episodes[e]
        rng = sample_rng(self.seed, epoch, i)
        horizon = self.pt.config.action_horizon
        idx, pad = chunk_indices(t, ep.length if self.end_of is None else int(self.end_of[i]), horizon)
        state_rig, actions_rig = ep.state[t], ep.actions[idx]
        v = self.pt.state_actions(state_rig, actions_rig)
        prompt = self.prompts.for_step(ep, t, rng)
        images, masks = self.pt.images(self.frames.frames(e, t), Augmenter(rng) if self.augment else None)
        if self.pt.config.discrete_state_input:  # pi0.5: the prompt carries this sample's state
            tp = self.pt.prompt_tokens(prompt, v.state)
            tokens, token_mask = tp.tokens, tp.mask
        else:
            tokens, token_mask = self.tokens[prompt]
        return {
            "images": {k: torch.from_numpy(v_) for k, v_ in images.items()},
            "image_masks": {k: torch.tensor(m) for k, m in masks.items()},
            "tokens": torch.from_numpy(tokens), "token_mask": torch.from_numpy(token_mask),
            "state": torch.from_numpy(v.state.astype(np.float32)),
            "actions": torch.from_numpy(v.actions.astype(np.float32)),
            "action_is_pad": torch.from_numpy(pad),
            "state_rig": torch.from_numpy(state_rig.astype(np.float32)),
            "actions_rig": torch.from_numpy(actions_rig.astype(np.float32)),
            "episode_index": torch.tensor(e), "frame_index": torch.tensor(t),
        }


class ResizedFrameCache:
    """Frames decoded and resized (resize_with_pad) to the model's image size once, held in RAM; forked loader
    workers share them copy-on-write. Same `frames(episode, step)` as the on-disk sources."""

    def __init__(self, images: dict[tuple[int, int], dict[str, np.ndarray]]) -> None:
        self.images = images

    @classmethod
    def build(cls, source, ep_of: np.ndarray, t_of: np.ndarray, cameras: list[tuple[str, ...]], size: int,
              max_fraction: float = 0.5) -> "ResizedFrameCache":
        keys = sorted({(int(e), int(t)) for e, t in zip(ep_of, t_of)})
        need = sum(len(cameras[e]) for e, _ in keys) * size * size * 3
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if need > max_fraction * avail:
            raise EpisodeDataError(f"cache_images needs {need / 2**30:.1f} GiB for {len(keys)} frames at {size} px, "
                                   f"more than half of the {avail / 2**30:.1f} GiB free: train without it")
        return cls({k: {cam: resize_with_pad(img, size) for cam, img in source.frames(*k).items()} for k in keys})

    def frames(self, episode: int, step: int) -> dict[str, np.ndarray]:
        return self.images[(episode, step)]


class StepBatchSampler(Sampler):
    """Infinite stream of batches of (sample index, epoch) keys, one batch per global step for this rank.

    Global sample position g -> epoch g // N, and the (seed, epoch) permutation's entry g % N. At step s rank r
    takes positions s*B*W + r*B + [0, B). `start_step` is read each time an iteration starts (resume)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n < 1:
            raise EpisodeDataError("no training frames")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.start_step = 0
        self._perm: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x5A4D]).permutation(self.n))
        return self._perm[1]

    def keys(self, step: int) -> list[tuple[int, int]]:
        b = self.batch_size
        first = (step * self.world_size + self.rank) * b
        out = []
        for g in range(first, first + b):
            epoch, pos = divmod(g, self.n)
            out.append((int(self._order(epoch)[pos]), epoch))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.keys(step)
            step += 1


class FixedBatchSampler(Sampler):
    """Finite, deterministic batches (validation)."""

    def __init__(self, indices: list[int], batch_size: int) -> None:
        self.indices, self.batch_size = indices, batch_size

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for s in range(0, len(self.indices), self.batch_size):
            yield [(i, 0) for i in self.indices[s: s + self.batch_size]]


def to_batch(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A collated (and pinned) dict -> the trainer's batch with an Observation."""
    obs = Observation(images=raw["images"], image_masks=raw["image_masks"], tokens=raw["tokens"],
                      token_mask=raw["token_mask"], state=raw["state"])
    out = {k: v for k, v in raw.items() if k not in ("images", "image_masks", "tokens", "token_mask", "state")}
    out["observation"] = obs
    return out


class BatchLoader:
    """A DataLoader whose batches come out as the trainer's dicts (Observation built after pinning)."""

    def __init__(self, loader: DataLoader, sampler: StepBatchSampler | FixedBatchSampler) -> None:
        self.loader, self.sampler = loader, sampler

    def iterator(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        if isinstance(self.sampler, StepBatchSampler):
            self.sampler.start_step = int(start_step)
        for raw in self.loader:
            yield to_batch(raw)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iterator(0)


def _loader(ds: FrameDataset, sampler: Sampler, num_workers: int, pin_memory: bool) -> DataLoader:
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw = {"prefetch_factor": 2, "persistent_workers": True}
    return DataLoader(ds, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory, **kw)


# -- the entry point ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingData:
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    norm_stats: dict[str, NormStats]
    transform_config: TransformConfig
    split: EpisodeSplit
    fingerprint: str
    rig: RigSnapshot
    config: DataConfig
    episodes: tuple[str, ...]  # episode ids; batch["episode_index"] indexes this
    train_samples: int  # frames in the training episodes
    val_samples: int  # validation frames used (all ranks)
    batch_size: int  # per rank
    world_size: int
    near_constant_fixed: tuple[str, ...] = ()  # dims only centred (low_std="fix")
    skipped: tuple[str, ...] = ()  # damaged episodes left out, with the reason
    source_kind: str = "hdf5"
    trial_episodes: tuple[str, ...] = ()  # the selected episodes that are trials (see DataConfig.trials)
    tasks: tuple[str, ...] = ()  # task prompts of the training episodes, most frequent first (a trial's default)
    identities: tuple[str, ...] = ()  # per episode (as `episodes`): its content hash (Episode.identity)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.train_samples // (self.batch_size * self.world_size))

    def iterator(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        """Infinite batches; the first is global step `start_step` (exact resume). One live iterator at a time."""
        return self.train_loader.iterator(start_step)

    def val_batches(self) -> Iterator[dict[str, Any]]:
        return iter(()) if self.val_loader is None else self.val_loader.iterator()

    def transforms(self, tokenizer: PromptTokenizer | None = None) -> PolicyTransforms:
        return PolicyTransforms(self.transform_config, self.norm_stats, tokenizer)

    def record(self) -> dict[str, Any]:
        return {"format": "aloha-workbench/pi0-dataset", "fingerprint": self.fingerprint,
                "source": self.config.source, "source_kind": self.source_kind, "data_config": self.config.to_json(),
                "split": self.split.to_json(), "episodes": list(self.episodes), "train_samples": self.train_samples,
                "val_samples": self.val_samples, "near_constant_fixed": list(self.near_constant_fixed),
                "skipped": list(self.skipped), "trials": self.config.trials,
                "trial_episodes": list(self.trial_episodes), "tasks": list(self.tasks)}

    def save(self, folder: str | Path) -> None:
        """norm_stats.json (openpi layout) + transforms.json + dataset.json + rig.json into a policy/run folder."""
        folder = Path(folder)
        self.transforms().save(folder)
        (folder / DATASET_FILE).write_text(json.dumps(self.record(), indent=1) + "\n")
        (folder / RIG_FILE).write_text(json.dumps(self.rig.to_json(), indent=1) + "\n")


def load_dataset_record(folder: str | Path) -> dict[str, Any]:
    """dataset.json of a run: its DataConfig (`DataConfig.from_json(r["data_config"])`), split and fingerprint."""
    return json.loads((Path(folder) / DATASET_FILE).read_text())


def build_training_data(cfg: DataConfig, model_config: Pi0Config, tokenizer: PromptTokenizer, *, batch_size: int,
                        num_workers: int, seed: int, rank: int = 0, world_size: int = 1,
                        pin_memory: bool | None = None) -> TrainingData:
    """Select, split and check the episodes, compute norm stats on the training episodes, and build the loaders."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    es = load_episodes(cfg.source, outcomes=cfg.outcomes, quality=cfg.quality, names=cfg.episodes,
                       revision=cfg.revision, trials=cfg.trials)
    _check_prompts(es, cfg)
    dim = es.episodes[0].state.shape[1]
    if cfg.adapt_to_pi and dim != len(ALOHA_DIM_NAMES):
        raise EpisodeDataError(f"{es.source}: episodes have {dim} joints per step; the ALOHA -> pi0 conversion "
                               f"(adapt_to_pi) needs 14 (two 6-joint arms + grippers). Set adapt_to_pi=False for "
                               f"another robot")
    tc = (TransformConfig.for_model(model_config, delta_actions=cfg.delta_actions) if cfg.adapt_to_pi
          else _plain_config(model_config, dim, cfg))
    cams = es.episodes[0].cameras
    if not set(tc.rig_cameras) & set(cams):
        raise EpisodeDataError(f"{es.source}: none of the episodes' cameras {list(cams)} has a pi0 slot "
                               f"(camera map {dict(tc.camera_map)})")
    split = split_episodes(es.ids(), cfg.val_fraction, cfg.split_seed, cfg.val_episodes)
    pos = {e.id: i for i, e in enumerate(es.episodes)}
    train_eps = [es.episodes[pos[i]] for i in split.train]
    names = ALOHA_DIM_NAMES if dim == len(ALOHA_DIM_NAMES) else tuple(f"dim_{i}" for i in range(dim))
    if cfg.norm_stats_file:  # a run's own statistics (resume --keep-run-data), not today's episodes'
        stats, fixed = _given_norm_stats(cfg.norm_stats_file, tc), ()
    else:
        res = compute_norm_stats(((e.state, e.actions) for e in train_eps), tc, dim_names=names,
                                 low_std=cfg.low_std, n_episodes=len(train_eps), seed=seed)
        stats, fixed = res.stats, res.fixed
    pt = PolicyTransforms(tc, stats, tokenizer)

    prompts = Prompts(cfg.prompt, cfg.prompt_mix_p, cfg.default_prompt)
    tokens = {}
    for e in es.episodes:
        for p in prompts.candidates(e):
            if p not in tokens:
                tp = tokenizer.tokenize(p)
                tokens[p] = (tp.tokens, tp.mask)

    def frames_of(ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode, step, end of the action targets) of every training sample of these episodes."""
        if not ids:
            return np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)
        steps = [es.episodes[pos[i]].training_steps(cfg.trials) for i in ids]
        ep = [np.full(len(t), pos[i]) for i, (t, _) in zip(ids, steps)]
        return (np.concatenate(ep), np.concatenate([t for t, _ in steps]), np.concatenate([e for _, e in steps]))

    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    ep_of, t_of, end_of = frames_of(split.train)
    if cfg.cache_images:
        vep0, vt0, _ = frames_of(split.val)
        es = dataclasses.replace(es, frames=ResizedFrameCache.build(
            es.frames, np.concatenate([ep_of, vep0]), np.concatenate([t_of, vt0]),
            [es.episodes[e].cameras for e in range(len(es.episodes))], tc.image_size))
    train_ds = FrameDataset(es, ep_of, t_of, pt, tokens, prompts, cfg.augment, seed, end_of)
    sampler = StepBatchSampler(len(train_ds), batch_size, seed, rank, world_size)
    train = BatchLoader(_loader(train_ds, sampler, num_workers, pin), sampler)

    val, n_val = None, 0
    vep, vt, vend = frames_of(split.val)
    if len(vep) and cfg.val_max_samples > 0:
        n = min(len(vep), cfg.val_max_samples)
        n -= n % world_size
        if n > 0:
            chosen = np.unique(np.linspace(0, len(vep) - 1, n).round().astype(int))
            chosen = chosen[: len(chosen) - len(chosen) % world_size]
            n_val = len(chosen)
            val_ds = FrameDataset(es, vep[chosen], vt[chosen], pt, tokens, prompts, False, seed, vend[chosen])
            vs = FixedBatchSampler(list(range(rank, n_val, world_size)), batch_size)
            val = BatchLoader(_loader(val_ds, vs, num_workers, pin), vs)

    return TrainingData(
        train_loader=train, val_loader=val, norm_stats=stats, transform_config=tc, split=split,
        fingerprint=fingerprint(es.episodes, {**cfg.selection(), "source_kind": es.kind}), rig=rig_snapshot(es),
        config=cfg, episodes=tuple(es.ids()), train_samples=len(train_ds), val_samples=n_val, batch_size=batch_size,
        world_size=world_size, near_constant_fixed=fixed, skipped=es.skipped, source_kind=es.kind,
        trial_episodes=tuple(e.id for e in es.episodes if e.trial),
        tasks=tuple(t for t, _ in collections.Counter(e.task for e in train_eps if e.task).most_common()),
        identities=tuple(e.identity() for e in es.episodes))


def _given_norm_stats(path: str, tc: TransformConfig) -> dict[str, NormStats]:
    """DataConfig.norm_stats_file, checked against the transform chain (state and actions, its dims)."""
    try:
        stats = load_norm_stats(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EpisodeDataError(f"norm_stats_file {path}: unreadable ({e}); give an openpi norm_stats.json or "
                               f"leave norm_stats_file out to compute the statistics from the episodes") from None
    for key in ("state", "actions"):
        if key not in stats or stats[key].mean.shape != (tc.rig_dim,):
            got = stats[key].mean.shape if key in stats else "none"
            raise EpisodeDataError(f"norm_stats_file {path}: {key!r} statistics have shape {got}, the episodes "
                                   f"{tc.rig_dim} dims; it belongs to another dataset or robot")
    return stats


def open_training_data(source: str, fields: Mapping[str, Any], model_config: Pi0Config, tokenizer: PromptTokenizer,
                       *, batch_size: int, num_workers: int, seed: int, rank: int = 0, world_size: int = 1) -> Any:
    """The trainer's data: `source` "synthetic" (finetune.synthetic_data: benchmarks, tests) or a dataset, with
    `fields` the other DataConfig fields (TrainConfig.data). Either has iterator(step), val_batches(), save()."""
    from finetune.synthetic_data import SYNTHETIC, SyntheticData

    if source == SYNTHETIC:
        return SyntheticData(model_config, batch_size, seed, rank, world_size)
    return build_training_data(DataConfig.from_json({"source": source, **fields}), model_config, tokenizer,
                               batch_size=batch_size, num_workers=num_workers, seed=seed, rank=rank,
                               world_size=world_size)


def _plain_config(model_config: Pi0Config, dim: int, cfg: DataConfig) -> TransformConfig:
    """Another robot: no ALOHA conversion; delta actions (if asked) on every dim, as no gripper is known."""
    base = TransformConfig.for_model(model_config, adapt_to_pi=False, delta_actions=cfg.delta_actions)
    if dim == base.rig_dim:
        return base
    return dataclasses.replace(base, rig_dim=dim, joint_flip=(1.0,) * dim, gripper_dims=(), delta_mask=(True,) * dim)
