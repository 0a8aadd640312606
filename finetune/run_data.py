"""What a run trains on, recorded when it starts (RUN/data_state/), and checked when it resumes.

A resume rebuilds its data from the dataset as it is then. Had episodes been added, removed or changed since the
run started, the train/validation split and the normalization statistics would come out different (state std up
to 83 % off; an episode already trained on drawn into validation): the resumed weights would see differently
normalized inputs and the validation loss would no longer be held out. So a run records before its first step,
atomically (a temporary folder, fsynced, renamed into place):

    data_state/  dataset.json, norm_stats.json, transforms.json, rig.json    (finetune.data.TrainingData.save)
                 episodes.json   {"fingerprint", "recorded_at_step", "identities": {episode: content hash}}

and `resume_data` (finetune.train, on --resume) compares the dataset's fingerprint under the run's selection
(outcomes, quality, episodes, trials) with it: unchanged, the run resumes as before; changed, it refuses naming
the episodes added / removed / changed, unless told to go on with the run's own split and statistics (`keep`:
`workbench train --resume --keep-run-data`). Runs from before data states (no data_state/) resume as before with
a note, and record one from then on.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from finetune.data import DATASET_FILE, DataConfig, TrainingData
from finetune.episode_set import EpisodeDataError
from finetune.episodes import fingerprint, load_episodes
from finetune.transforms import NORM_STATS_FILE

DATA_STATE = "data_state"
EPISODES_FILE = "episodes.json"
FORMAT = "aloha-workbench/run-data-state"
NAMES_SHOWN = 8  # episode names listed per kind of change; the rest are counted


class DatasetChangedError(EpisodeDataError):
    """The dataset is not what the run trained on (or its recorded state is unreadable); the message says how."""


@dataclass(frozen=True)
class DataState:
    """A run's recorded data: its selection's fingerprint, episodes (dataset order), split and their contents."""

    folder: Path
    fingerprint: str
    episodes: tuple[str, ...]
    train: tuple[str, ...]
    val: tuple[str, ...]
    identities: Mapping[str, str]
    recorded_at_step: int

    @property
    def norm_stats_file(self) -> Path:
        return self.folder / NORM_STATS_FILE


@dataclass(frozen=True)
class DatasetChange:
    """How the selected episodes differ from the recorded ones (by name; `changed`: same name, other content)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()  # deleted, trashed, damaged, or no longer selected (relabelled)
    changed: tuple[str, ...] = ()
    unreadable: str = ""  # the dataset cannot be read with the run's selection now: why

    def summary(self) -> str:
        parts = [f"{len(names)} episode{'s' if len(names) != 1 else ''} {what} ({_names(names)})"
                 for what, names in (("added", self.added), ("removed or no longer selected", self.removed),
                                     ("changed", self.changed)) if names]
        if self.unreadable:
            parts.append(f"it cannot be read with the run's selection any more: {self.unreadable}")
        return "; ".join(parts) or "its fingerprint differs (the same episodes by name and content: their order " \
                                   "or the kind of source changed)"


@dataclass(frozen=True)
class ResumeData:
    """What finetune.train does with the data at this start."""

    data: dict[str, Any] | None = None  # DataConfig fields to train on instead of TrainConfig.data (kept run data)
    record: bool = True  # record the data state once the data is built (a new run; a run without one)
    notes: tuple[str, ...] = field(default=())  # to report (a Status event each)


def _names(names: tuple[str, ...]) -> str:
    more = len(names) - NAMES_SHOWN
    return ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def record_data_state(run_dir: str | Path, data: TrainingData, step: int = 0) -> Path:
    """Writes run_dir/data_state atomically; a previous one (a start that never reached a checkpoint, or an old
    run's first resume) is replaced."""
    from recorder.durable import fsync_path, fsync_tree

    run_dir = Path(run_dir)
    final, tmp, old = run_dir / DATA_STATE, run_dir / f".tmp-{DATA_STATE}", run_dir / f".old-{DATA_STATE}"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    tmp.mkdir(parents=True)
    data.save(tmp)
    (tmp / EPISODES_FILE).write_text(json.dumps(
        {"format": FORMAT, "fingerprint": data.fingerprint, "recorded_at_step": int(step),
         "identities": dict(zip(data.episodes, data.identities))}, indent=1) + "\n")
    fsync_tree(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    fsync_path(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_data_state(run_dir: str | Path) -> DataState | None:
    """run_dir/data_state, or None for a run without one (started before data states were recorded)."""
    folder = Path(run_dir) / DATA_STATE
    if not folder.is_dir():
        return None
    try:
        record = json.loads((folder / DATASET_FILE).read_text())
        eps = json.loads((folder / EPISODES_FILE).read_text())
        if not (folder / NORM_STATS_FILE).is_file():
            raise FileNotFoundError(folder / NORM_STATS_FILE)
        return DataState(folder=folder, fingerprint=str(record["fingerprint"]),
                         episodes=tuple(record["episodes"]), train=tuple(record["split"]["train"]),
                         val=tuple(record["split"]["val"]), identities=dict(eps["identities"]),
                         recorded_at_step=int(eps.get("recorded_at_step", 0)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetChangedError(f"{folder} (what the run trained on) is unreadable ({e!r}). Start a new run "
                                  f"(a new --out), or delete {folder} to resume without the check") from None


def dataset_change(state: DataState, cfg: DataConfig) -> DatasetChange | None:
    """None when the dataset, under the run's selection, is still what the run recorded (same fingerprint)."""
    try:
        es = load_episodes(cfg.source, outcomes=cfg.outcomes, quality=cfg.quality, names=cfg.episodes,
                           revision=cfg.revision, trials=cfg.trials)
    except EpisodeDataError as e:
        return DatasetChange(unreadable=str(e))
    if fingerprint(es.episodes, {**cfg.selection(), "source_kind": es.kind}) == state.fingerprint:
        return None
    now = {e.id: e.identity() for e in es.episodes}
    return DatasetChange(added=tuple(i for i in now if i not in state.identities),
                         removed=tuple(i for i in state.episodes if i not in now),
                         changed=tuple(i for i in state.episodes if i in now and now[i] != state.identities.get(i)))


def kept_fields(state: DataState, cfg: DataConfig) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(DataConfig fields, dropped): the run's own episode lists and norm_stats.json. The recorded lists are the
    selection (outcome / quality filters no longer apply: a relabelled episode stays where it was); recorded
    episodes that no longer exist are `dropped`; episodes added since are not used."""
    try:
        es = load_episodes(cfg.source, names=state.episodes, revision=cfg.revision, trials=cfg.trials)
        present = set(es.ids())
    except EpisodeDataError as e:
        raise DatasetChangedError(f"none of the run's {len(state.episodes)} episodes can be read from "
                                  f"{cfg.source} any more ({e}); start a new run (a new --out)") from None
    train = [i for i in state.train if i in present]
    if not train:
        raise DatasetChangedError(f"none of the run's training episodes ({_names(state.train)}) is left in "
                                  f"{cfg.source}; start a new run (a new --out)")
    dropped = tuple(i for i in state.episodes if i not in present)
    fields = {"outcomes": [], "quality": [], "episodes": [i for i in state.episodes if i in present],
              "val_episodes": [i for i in state.val if i in present], "norm_stats_file": str(state.norm_stats_file)}
    return fields, dropped


def resume_data(run_dir: str | Path, source: str, fields: Mapping[str, Any], *, resuming: bool,
                keep: bool = False) -> ResumeData:
    """The data decision of a (re)start. `resuming`: from a checkpoint; `fields`: TrainConfig.data. Raises
    DatasetChangedError (the message has the fixes) when the dataset changed and `keep` is off."""
    from finetune.synthetic_data import SYNTHETIC

    if source == SYNTHETIC:
        return ResumeData(record=False)
    if not resuming:
        return ResumeData()
    state = load_data_state(run_dir)
    if state is None:
        return ResumeData(notes=(
            f"note: {run_dir} has no record of what it trained on (a run from before {DATA_STATE}/ was recorded): "
            "resuming with the split and normalization statistics computed from the dataset as it is now; if "
            "episodes changed since the run started, these differ from the run's. Recorded now: later resumes "
            "are checked against it.",))
    cfg = DataConfig.from_json({"source": source, **fields})
    change = dataset_change(state, cfg)
    if change is None:
        return ResumeData(record=False)
    since = ("since this run started" if not state.recorded_at_step
             else f"since step {state.recorded_at_step}, when this run recorded its data")
    if not keep:
        raise DatasetChangedError(
            f"{source} changed {since}: {change.summary()}. Resuming would recompute the train/validation split "
            "and the normalization statistics on it: the trained weights would see differently normalized inputs "
            "and the validation loss would no longer be held out. Fix: `workbench train --out "
            f"{run_dir} --resume --keep-run-data` goes on with the run's own split and statistics (episodes that "
            "no longer exist are dropped, new ones are not used), or start a new run on the dataset as it is "
            "with a new --out.")
    kept, dropped = kept_fields(state, cfg)
    n_train = len([i for i in state.train if i in kept["episodes"]])
    notes = [f"{source} changed {since}: {change.summary()}; going on with the run's own split ({n_train} "
             f"training, {len(kept['val_episodes'])} validation episodes) and normalization statistics "
             "(--keep-run-data)"
             + (f"; not used: {_names(change.added)}" if change.added else "")]
    if dropped:
        notes.append(f"warning: dropped from the run's episode lists, no longer in {source}: {_names(dropped)}")
    return ResumeData(data={**fields, **kept}, record=False, notes=tuple(notes))
