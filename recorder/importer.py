"""Import ALOHA HDF5 folders (ALOHA 1 raw images, ALOHA 2 / Mobile ALOHA padded JPEG) into a dataset store.

ALOHA files carry no timestamps: steps are stamped at the nominal rate and marked `timestamps_measured =
False`, so the rate / jitter / skew checks read "n/a" instead of a made-up pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from drivers.arm import DEFAULT_CONTROL_HZ
from recorder import format as fmt
from recorder.finalize import INCOMING, SavedEpisode, finalize_file
from recorder.h5file import EpisodeFileBuilder
from recorder.journal import StepRecord
from recorder.quality import QualityThresholds
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from recorder.writer import encode_jpeg


@dataclass
class ImportResult:
    imported: list[tuple[Path, SavedEpisode]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _natural(p: Path):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p.name)]


def import_aloha_episode(src: Path, store: DatasetStore, *, task: str = "", fps: float = DEFAULT_CONTROL_HZ,
                         thresholds: QualityThresholds | None = None) -> SavedEpisode:
    with EpisodeReader(src) as r, store.locked():
        info = r.info
        name = fmt.episode_name(store.next_index())
        inc = store.root / INCOMING
        inc.mkdir(exist_ok=True)
        tmp = inc / f"{name}.import{fmt.EPISODE_SUFFIX}"
        b = EpisodeFileBuilder(tmp, info.cameras, r.qpos.shape[1])
        try:
            qpos, qvel, effort, action = r.qpos, r.qvel, r.effort, r.action
            n = info.steps
            ncam = len(info.cameras)
            for i in range(n):
                t = i / fps
                state = np.stack([qpos[i], qvel[i], effort[i], action[i], action[i]]).astype(np.float32)
                b.append_step(StepRecord(i, t, float("nan"), 1 / fps if i else float("nan"), state,
                                         np.full(ncam, t), np.full(ncam, i, np.int64)))
                for c, cam in enumerate(info.cameras):
                    jpeg = r.jpeg(cam, i)
                    b.append_frame(c, i, jpeg if jpeg is not None else encode_jpeg(r.image(cam, i)))
            header = {"task": task, "sim": info.sim, "control_hz": fps, "timestamps_measured": False,
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "notes": f"imported from {src} ({info.source})", "thresholds": (
                          thresholds.__dict__ if thresholds else {})}
            saved = finalize_file(b, store.root / f"{name}{fmt.EPISODE_SUFFIX}", header, [],
                                  extra_attrs={"imported_from": str(src), "imported_format": info.source})
        except BaseException:
            b.abort()
            tmp.unlink(missing_ok=True)
            raise
    store.list()
    return saved


def import_aloha_folder(folder: Path, store: DatasetStore, *, task: str = "", fps: float = DEFAULT_CONTROL_HZ) -> ImportResult:
    res = ImportResult()
    files = sorted([*Path(folder).glob("*.hdf5"), *Path(folder).glob("*.h5")], key=_natural)
    for src in files:
        try:
            res.imported.append((src, import_aloha_episode(src, store, task=task, fps=fps)))
        except (OSError, KeyError, ValueError) as e:
            res.failed.append((src, f"{type(e).__name__}: {e}"))
    return res
