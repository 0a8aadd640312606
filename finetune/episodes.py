"""Episodes for training, read straight from where they live: our dataset folder (HDF5 episodes, imported ALOHA
ones included, with export's selection: outcome, quality, names; trash and damaged files excluded) or a LeRobot
v3.0 dataset (a local folder, or a hub dataset id fetched with huggingface-hub).

Trial episodes (policy rollouts recorded by the trial runner: the `recorder.format.TRIAL_ATTR` attribute) are
selected by `trials` (see TRIAL_MODES): left out (default), only their operator-correction spans (HG-DAgger), or
whole. A trial's prompt per step is its "prompt" lane (the command in force), else its task / initial prompt.
LeRobot datasets carry no trial records: every episode there counts as a demonstration.

Only the small per-step arrays are loaded here (joints, actions, prompts); camera frames are read on demand by a
`FrameReader`, which opens its files lazily in whichever process uses it (DataLoader workers never share an h5py
handle or a video decoder across a fork).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from drivers.arm import JOINT_NAMES, SIDES
from finetune.episode_set import Episode, EpisodeDataError, EpisodeSet, NoEpisodesError
from finetune.lerobot_source import load_lerobot
from recorder.rig_info import RigInfo, rig_info_from_toml

RIG_FILE = "rig.json"
TrialsMode = Literal["exclude", "corrections", "all"]
TRIAL_MODES: tuple[str, ...] = ("exclude", "corrections", "all")
ALOHA_DIM_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in SIDES for j in JOINT_NAMES)


@dataclass(frozen=True)
class EpisodeSplit:
    """Train / validation by episode (never by frame: neighbouring frames would leak into validation)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"train": list(self.train), "val": list(self.val), "seed": self.seed}


@dataclass(frozen=True)
class RigSnapshot:
    """What the policy was trained for: cameras, joint layout, gripper constants, control rate."""

    name: str
    backend: str
    control_hz: float | None
    cameras: tuple[str, ...]
    joint_names: tuple[str, ...]
    gripper_set: str  # preset name, "custom", or "unknown" (imports, LeRobot)
    gripper: dict[str, float] | None
    rig_config: str  # TOML text of the first episode's rig ("" when unknown)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"], d["joint_names"] = list(self.cameras), list(self.joint_names)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "RigSnapshot":
        return RigSnapshot(**{**d, "cameras": tuple(d["cameras"]), "joint_names": tuple(d["joint_names"])})


# -- selection and loading ------------------------------------------------------------------------------------

def load_episodes(source: str, *, outcomes: Sequence[str] = (), quality: Sequence[str] = (),
                  names: Sequence[str] = (), revision: str | None = None, trials: str = "exclude") -> EpisodeSet:
    """Our dataset folder, a LeRobot v3.0 folder, or a hub dataset id ("owner/name"). trials: which trial
    episodes come in (TRIAL_MODES; "corrections" keeps only trials with a correction span)."""
    if trials not in TRIAL_MODES:
        raise ValueError(f"trials must be one of {', '.join(TRIAL_MODES)}, not {trials!r}")
    root = _resolve(source, revision)
    if (root / "meta" / "info.json").is_file():
        es = load_lerobot(root, outcomes=outcomes, quality=quality, names=names)
    else:
        es = _load_hdf5(root, outcomes, quality, names, trials)
    check_consistent(es)
    return es


def _resolve(source: str, revision: str | None) -> Path:
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    from finetune.hub import HubError, _call, _looks_local

    if _looks_local(str(source)):
        raise EpisodeDataError(f"dataset {source} does not exist (give a dataset folder, a LeRobot v3.0 folder or a "
                               f"hub dataset id like 'lerobot/aloha_sim_transfer_cube_human')")
    from huggingface_hub import snapshot_download

    try:
        return _call(lambda: Path(snapshot_download(repo_id=str(source), repo_type="dataset", revision=revision)),
                     str(source), revision)
    except HubError as e:
        raise EpisodeDataError(f"dataset {source}: {e}") from None


def _load_hdf5(root: Path, outcomes: Sequence[str], quality: Sequence[str], names: Sequence[str],
               trials: str = "exclude") -> EpisodeSet:
    from recorder import format as fmt
    from recorder.reader import EpisodeReader
    from recorder.segments import subtask_per_step
    from recorder.store import DatasetStore, StoreError, select

    try:
        store = DatasetStore(root, create=False)
        listed = store.list()
        damaged = store.damaged()
    except StoreError as e:
        raise EpisodeDataError(str(e)) from None
    chosen = select(listed, outcomes=outcomes or None, quality=quality or None, names=names or None)
    skipped = tuple(f"{e.name}: {e.damaged}" for e in damaged)
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} damaged episodes left out: {'; '.join(skipped)}", stacklevel=3)
    if not chosen:
        raise NoEpisodesError(_none_usable(root, listed, outcomes, quality, names, skipped))
    eps = []
    left_out: list[str] = []  # trial episodes this `trials` mode does not use
    for s in chosen:
        path = store.path(s.name)
        try:
            with EpisodeReader(path) as r:
                info = r.info
                trial = fmt.TRIAL_ATTR in info.extra
                corrections = tuple((c.start, c.end) for c in info.segments if c.lane == "correction")
                if trial and (trials == "exclude" or (trials == "corrections" and not corrections)):
                    left_out.append(info.name)
                    continue
                state, actions = r.qpos, r.action
        except (OSError, KeyError, ValueError) as e:
            raise EpisodeDataError(f"{path}: unreadable episode ({e}); move it out of the dataset or restore it") from None
        subtasks = subtask_per_step(info.segments, info.steps) if info.segments else None
        eps.append(Episode(
            id=info.name, state=np.asarray(state, np.float64), actions=np.asarray(actions, np.float64),
            task=info.task, subtasks=None if subtasks is None else tuple(subtasks),
            frame_tasks=_trial_prompts(info) if trial else None,
            cameras=tuple(info.cameras), control_hz=info.control_hz, rig_config=info.rig_config, rig=info.rig_info,
            outcome=info.outcome, quality=s.quality, trial=trial, corrections=corrections if trial else ()))
    if not eps:
        why = ("trials='exclude' (the default) leaves policy rollouts out; use trials='corrections' (operator "
               "takeovers) or 'all'" if trials == "exclude" else
               "trials='corrections' uses only trials with correction segments; none of them has one")
        raise NoEpisodesError(f"{root}: the {len(left_out)} selected episodes are all trial episodes and {why}, or "
                               f"record demonstrations")
    frames = HDF5Frames(tuple(str(store.path(e.id)) for e in eps))
    return EpisodeSet(str(root), "hdf5", tuple(eps), frames, skipped)


def _trial_prompts(info) -> tuple[str, ...] | None:
    """Per step of a trial, the prompt in force: its "prompt" lane segment, else the trial record's prompt list
    (each prompt from its tick, else its step, on), else the episode's task. None when the trial has neither (the task is used)."""
    try:
        record = info.trial or {}
    except ValueError:
        record = {}
    changes = sorted((int(p.get("tick", p.get("step")) or 0), str(p["text"])) for p in record.get("prompts") or []
                     if isinstance(p, dict) and p.get("text"))  # "tick": the control step it took effect
    lane = [c for c in info.segments if c.lane == "prompt"]
    if not lane and not changes:
        return None
    n = info.steps
    out = [info.task] * n
    spans = [(step, nxt, text) for (step, text), nxt in zip(changes, [c[0] for c in changes[1:]] + [n])]
    spans += [(c.start, c.end, c.text) for c in lane]  # the lane (editable in the review) wins
    for start, end, text in spans:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
        out[start:end] = [text] * max(0, end - start)
    return tuple(out)


def _none_usable(root: Path, listed: list, outcomes, quality, names, skipped) -> str:
    if not listed:
        what = "no episodes" + (f" (all {len(skipped)} are damaged: {'; '.join(skipped)})" if skipped else "")
        return f"{root}: {what}; record some first (workbench record) or import ALOHA files (episodes import)"
    from recorder.store import why_none_selected

    why = why_none_selected(listed, outcomes, quality, names, damaged=len(skipped))
    if outcomes and "success" in outcomes:  # training's default filter (finetune.presets.DEFAULT_OUTCOMES)
        why += "; training takes successful episodes only unless told: --outcome all (the Train tab's 'All labels')" \
               " takes every label"
    return f"{root}: {why}"


class HDF5Frames:
    """Frames from episode files, each opened once per process on first use (never inherited across a fork)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self._pid = -1
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["paths"])

    def _reader(self, episode: int):
        from recorder.reader import EpisodeReader

        if self._pid != os.getpid():  # a forked worker: forget the parent's handles, open our own
            self._pid, self._open = os.getpid(), {}
        r = self._open.get(episode)
        if r is None:
            r = self._open[episode] = EpisodeReader(self.paths[episode])
        return r

    def frames(self, episode: int, step: int) -> dict[str, np.ndarray]:
        r = self._reader(episode)
        return {cam: r.image(cam, step) for cam in r.info.cameras}

    def close(self) -> None:
        for r in self._open.values():
            r.close()
        self._open = {}


# -- checks -------------------------------------------------------------------------------------------------

def check_consistent(es: EpisodeSet) -> None:
    """One rig for all episodes: same cameras, same joint count, finite values, actions aligned with states."""
    if not es.episodes:
        raise NoEpisodesError(f"{es.source}: no usable episodes")
    first = es.episodes[0]
    for e in es.episodes:
        if e.length < 1:
            raise EpisodeDataError(f"{es.source}: {e.id} has no steps; delete it (workbench episodes ... rm {e.id})")
        if e.state.ndim != 2 or e.actions.shape != e.state.shape:
            raise EpisodeDataError(f"{es.source}: {e.id} has states {e.state.shape} but actions {e.actions.shape}: "
                                   f"the file is damaged; leave it out (episodes=...) or delete it")
        if set(e.cameras) != set(first.cameras):
            raise EpisodeDataError(
                f"{es.source}: {e.id} has cameras {list(e.cameras)}, {first.id} {list(first.cameras)}; a policy "
                f"needs one camera set. Select episodes from one rig set-up (episodes=...)")
        if e.state.shape[1] != first.state.shape[1]:
            raise EpisodeDataError(
                f"{es.source}: {e.id} has {e.state.shape[1]} joints per step, {first.id} {first.state.shape[1]}; "
                f"episodes from different rigs cannot be mixed. Select episodes from one rig (episodes=...)")
        bad = ~(np.isfinite(e.state).all(1) & np.isfinite(e.actions).all(1))
        if bad.any():
            raise EpisodeDataError(f"{es.source}: {e.id} has non-finite joint values at step {int(np.argmax(bad))}; "
                                   f"leave it out (episodes=...) or delete it")
    rates = {round(e.control_hz, 3) for e in es.episodes if e.control_hz}
    if len(rates) > 1:
        raise EpisodeDataError(f"{es.source}: episodes recorded at different control rates {sorted(rates)} Hz; "
                               f"a policy runs at one rate: select episodes of one rate")


# -- split, fingerprint, rig ----------------------------------------------------------------------------------

def split_episodes(ids: Sequence[str], val_fraction: float, seed: int,
                   val_ids: Sequence[str] | None = None) -> EpisodeSplit:
    """Seeded split by episode; `val_ids` gives it explicitly (to reproduce a run's split)."""
    ids = list(ids)
    if val_ids is not None:
        unknown = set(val_ids) - set(ids)
        if unknown:
            raise EpisodeDataError(f"validation episodes {sorted(unknown)} are not among the selected episodes")
        val = [i for i in ids if i in set(val_ids)]
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise EpisodeDataError(f"val_fraction must be in [0, 1), not {val_fraction}")
        n_val = int(round(len(ids) * val_fraction))
        if val_fraction > 0 and len(ids) >= 2:
            n_val = min(max(n_val, 1), len(ids) - 1)
        else:
            n_val = 0
        order = np.random.default_rng([seed, 0x5B17]).permutation(len(ids))
        chosen = {ids[i] for i in order[:n_val]}
        val = [i for i in ids if i in chosen]
    train = [i for i in ids if i not in set(val)]
    if not train:
        raise EpisodeDataError("no training episodes left after the validation split; lower val_fraction")
    return EpisodeSplit(tuple(train), tuple(val), seed)


def fingerprint(episodes: Iterable[Episode], selection: dict[str, Any]) -> str:
    """sha256 over the selection and every selected episode's content identity."""
    h = hashlib.sha256(json.dumps(selection, sort_keys=True, default=list).encode())
    for e in episodes:
        h.update(e.identity().encode())
    return h.hexdigest()


def episode_rig(e: Episode) -> RigInfo | None:
    """The rig facts of an episode: recorded with it, else (episodes recorded before the rig_info attribute) read
    from its stored rig file text by recorder.rig_info, which needs no rig layer. None when unknown: imports,
    LeRobot datasets, or a rig text that cannot be read (a warning says so; the run goes on)."""
    if e.rig is not None:
        return e.rig
    if not e.rig_config:
        return None
    try:
        return rig_info_from_toml(e.rig_config)
    except ValueError as exc:  # an old or foreign rig text: the snapshot says so instead of failing the run
        warnings.warn(f"{e.id}: its stored rig config could not be read ({exc}); gripper constants unknown")
        return None


def rig_snapshot(es: EpisodeSet) -> RigSnapshot:
    first = es.episodes[0]
    d = first.state.shape[1]
    joints = ALOHA_DIM_NAMES if d == len(ALOHA_DIM_NAMES) else tuple(f"dim_{i}" for i in range(d))
    name, backend, gripper_set, gripper = Path(es.source).name, "unknown", "unknown", None
    rig = episode_rig(first)
    if rig is not None:
        name, backend, gripper_set = rig.name or name, rig.backend, rig.gripper_set
        gripper = dict(rig.gripper) if rig.gripper is not None else None
        if len(rig.joint_names) == d:
            joints = tuple(rig.joint_names)
    return RigSnapshot(name=name, backend=backend, control_hz=first.control_hz, cameras=first.cameras,
                       joint_names=joints, gripper_set=gripper_set, gripper=gripper, rig_config=first.rig_config)
