"""Read episodes: ours, and ALOHA 1 (raw uint8 images) / ALOHA 2 and Mobile ALOHA (padded JPEG) files.

Labels edited after recording (outcome, notes, segments) live in a sidecar `<name>.labels.json` written
atomically by the dataset store, so a finished episode file is never rewritten in place; the reader
applies the sidecar on top of the file's own values.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import cv2
import h5py
import numpy as np

from recorder import format as fmt
from recorder.format import Segment, attr_str
from recorder.integrity import file_problems, with_problems
from recorder.quality import QualityReport
from recorder.rig_info import RigInfo, rig_info_from_toml
from recorder.segments import normalize_legacy, segments_from_phases
from recorder.finalize import RESERVED_ATTRS

Source = Literal["workbench", "aloha1", "aloha2"]
LABELS_SUFFIX = ".labels.json"


def labels_path(episode_path: Path) -> Path:
    return episode_path.with_name(episode_path.stem + LABELS_SUFFIX)


@dataclass
class EpisodeInfo:
    name: str
    path: Path
    source: Source
    steps: int
    cameras: list[str]
    task: str = ""
    outcome: str = "unlabeled"
    notes: str = ""
    segments: list[Segment] = field(default_factory=list)
    quality: QualityReport | None = None
    sim: bool = False
    sim_seed: int | None = None  # simulation: the object randomization seed of the episode
    created: str = ""
    duration_s: float = float("nan")
    control_hz: float | None = None
    format_version: int | None = None
    recovered: bool = False
    rig_config: str = ""
    rig_info: RigInfo | None = None  # the recorded rig facts (attribute recorder.format.RIG_INFO_ATTR), see rig()
    timestamps_measured: bool = False
    problems: list[str] = field(default_factory=list)  # what is missing or inconsistent: [] = the file is whole
    extra: dict[str, Any] = field(default_factory=dict)  # root attributes beyond the recorder's own (set_extra_attrs)

    @property
    def trial(self) -> dict[str, Any] | None:
        """The parsed trial record (attribute recorder.format.TRIAL_ATTR) of a trial episode; None for others.
        A trial attribute that is not a JSON object raises ValueError."""
        raw = self.extra.get(fmt.TRIAL_ATTR)
        if raw is None:
            return None
        d = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(d, dict):
            raise ValueError(f"{self.name}: the {fmt.TRIAL_ATTR!r} attribute is not a JSON object")
        return d


    def rig(self) -> RigInfo | None:
        """The recording rig's facts (recorder.rig_info): the episode's rig_info attribute, else (episodes recorded
        before it) read from its rig file text; None when it has neither (imports). Raises ValueError when only
        an unreadable rig file text is there."""
        if self.rig_info is not None:
            return self.rig_info
        if not self.rig_config:
            return None
        info = rig_info_from_toml(self.rig_config)
        return dataclasses.replace(info, cameras=tuple(self.cameras), control_hz=self.control_hz or info.control_hz)


class EpisodeReader:
    """Lazy access to one episode file; use as a context manager."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.f = h5py.File(self.path, "r")
        try:
            self.info = self._read_info()
        except BaseException:
            self.f.close()
            raise

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    # -- metadata -----------------------------------------------------------------------------------------
    def _read_info(self) -> EpisodeInfo:
        a = self.f.attrs
        img = self.f.get(fmt.IMAGES)
        cams = list(img.keys()) if img is not None else []
        qpos = self.f.get(fmt.QPOS)
        steps = int(qpos.shape[0]) if qpos is not None else 0
        ours = attr_str(a.get("format")) == fmt.FORMAT_NAME
        if ours:
            cams = json.loads(attr_str(a["camera_names"]))
        problems = file_problems(self.f, cams, ours)
        if ours:
            t = self.f.get(fmt.TIME_T)
            ch = float(a.get("control_hz", np.nan))
            segs, laned = fmt.segments_from_dicts(json.loads(attr_str(a.get("segments")) or "[]"))
            info = EpisodeInfo(
                name=self.path.stem, path=self.path, source="workbench", steps=steps, cameras=cams,
                task=attr_str(a.get("task")), outcome=attr_str(a.get("outcome")) or "unlabeled",
                notes=attr_str(a.get("notes")), segments=segs if laned else self._legacy(segs, steps),
                quality=QualityReport.from_json(attr_str(a.get("quality"))), sim=bool(a.get("sim", False)),
                sim_seed=int(a["sim_seed"]) if int(a.get("sim_seed", -1)) >= 0 else None,
                created=attr_str(a.get("created")),
                duration_s=float(t[steps - 1] - t[0]) if steps > 1 and t is not None and len(t) >= steps else 0.0,
                control_hz=ch if np.isfinite(ch) else None, format_version=int(a["format_version"]),
                recovered=bool(a.get("recovered", False)), rig_config=attr_str(a.get("rig_config")),
                rig_info=_rig_info(a.get(fmt.RIG_INFO_ATTR)),
                timestamps_measured=bool(a.get("timestamps_measured", True)))
        else:
            raw = bool(cams) and self.f[f"{fmt.IMAGES}/{cams[0]}"].ndim == 4
            info = EpisodeInfo(name=self.path.stem, path=self.path, source="aloha1" if raw else "aloha2",
                               steps=steps, cameras=cams, sim=bool(a.get("sim", False)))
        side = labels_path(self.path)
        if side.exists():
            d = json.loads(side.read_text())
            info.outcome = d.get("outcome", info.outcome)
            info.notes = d.get("notes", info.notes)
            if "segments" in d:
                segs, laned = fmt.segments_from_dicts(d["segments"])
                info.segments = segs if laned else self._legacy(segs, steps)
        info.extra = {k: _attr_value(v) for k, v in a.items() if k not in RESERVED_ATTRS}
        if problems:
            info.problems = problems
            info.quality = with_problems(info.quality, problems)
        return info

    def _legacy(self, segments: list[Segment], steps: int) -> list[Segment]:
        """Segments of a file written before lanes, normalized (see recorder.segments.normalize_legacy)."""
        if not segments:
            return []
        return normalize_legacy(segments, segments_from_phases(_phase_runs(self.phase), steps), steps)

    # -- arrays -------------------------------------------------------------------------------------------
    def _arr(self, key: str) -> np.ndarray | None:
        ds = self.f.get(key)
        return None if ds is None else ds[()]

    @property
    def qpos(self) -> np.ndarray:
        return self._arr(fmt.QPOS)

    @property
    def qvel(self) -> np.ndarray:
        return self._arr(fmt.QVEL)

    @property
    def effort(self) -> np.ndarray:
        return self._arr(fmt.EFFORT)

    @property
    def action(self) -> np.ndarray:
        return self._arr(fmt.ACTION)

    @property
    def command(self) -> np.ndarray | None:
        return self._arr(fmt.COMMAND)

    @property
    def t(self) -> np.ndarray | None:
        return self._arr(fmt.TIME_T)

    @property
    def t_wall(self) -> np.ndarray | None:
        return self._arr(fmt.TIME_WALL)

    @property
    def phase(self) -> list[str] | None:
        ds = self.f.get(fmt.PHASE)
        return None if ds is None else [attr_str(x) for x in ds[()]]

    @property
    def hw_errors(self) -> list[tuple[int, str]]:
        return [tuple(x) for x in json.loads(attr_str(self.f.attrs.get("hw_errors")) or "[]")]

    def camera_t(self, cam: str) -> np.ndarray | None:
        return self._arr(f"{fmt.CAMERAS}/{cam}/t")

    def camera_seq(self, cam: str) -> np.ndarray | None:
        return self._arr(f"{fmt.CAMERAS}/{cam}/seq")

    def camera_crc(self, cam: str) -> np.ndarray | None:
        return self._arr(f"{fmt.CAMERAS}/{cam}/crc32")

    # -- images -------------------------------------------------------------------------------------------
    def jpeg(self, cam: str, i: int) -> bytes | None:
        """The stored JPEG bytes of step i (None for raw ALOHA 1 images)."""
        ds = self.f[f"{fmt.IMAGES}/{cam}"]
        if ds.ndim == 4:
            return None
        if self.info.source == "workbench":
            n = int(self.f[fmt.COMPRESS_LEN][self.info.cameras.index(cam), i])
            return ds[i, :n].tobytes()
        return np.trim_zeros(ds[i], "b").tobytes()  # JPEG ends with FF D9: trailing zeros are padding

    def image(self, cam: str, i: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of step i."""
        ds = self.f[f"{fmt.IMAGES}/{cam}"]
        if ds.ndim == 4:
            return ds[i]
        buf = self.jpeg(cam, i)
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{self.path}: {cam} step {i} is not a decodable JPEG")
        return img

    def images(self, cam: str) -> Iterator[np.ndarray]:
        for i in range(self.info.steps):
            yield self.image(cam, i)


def _attr_value(v: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes -> str, numpy scalars and arrays -> Python ones)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return [_attr_value(x) for x in v.tolist()] if v.dtype.kind in "OS" else v.tolist()
    return v


def _phase_runs(phase: list[str] | None) -> list[tuple[int, str]]:
    runs: list[tuple[int, str]] = []
    for i, p in enumerate(phase or []):
        if not runs or runs[-1][1] != p:
            runs.append((i, p))
    return runs


def read_info(path: Path | str) -> EpisodeInfo:
    with EpisodeReader(path) as r:
        return r.info


def _rig_info(raw: Any) -> RigInfo | None:
    """The rig_info attribute; None when absent or unreadable (EpisodeInfo.rig then falls back to the rig file)."""
    if raw is None:
        return None
    try:
        return RigInfo.from_json(json.loads(attr_str(raw)))
    except (ValueError, TypeError, AttributeError):
        return None
