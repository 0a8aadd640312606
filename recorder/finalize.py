"""Finishing an episode file: quality report, segments, attributes, then fsync and publish into the dataset.

Shared by the three ways an episode file comes to be: the streaming writer (recorder.writer), crash recovery from
a journal (recorder.recovery) and the importer (recorder.importer); each of them builds on this module, which
builds on none of them.
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from recorder import format as fmt
from recorder.durable import fsync_path
from recorder.format import Segment
from recorder.h5file import EpisodeFileBuilder
from recorder.quality import QualityReport, QualityThresholds, compute_quality
from recorder.segments import segments_from_marks, segments_from_phases

INCOMING = ".incoming"
# Root attributes the recorder itself writes (EpisodeFileBuilder.finish, finalize_file, recovery, import): extra
# attributes (EpisodeWriter.set_extra_attrs) may not use these names; the reader reports every other attribute
# as `EpisodeInfo.extra`.
RESERVED_ATTRS = frozenset({
    "sim", "compress", "format", "format_version", "camera_names", "hw_errors", "sim_seed", "task", "outcome",
    "notes", "rig_config", "created", "control_hz", "timestamps_measured", "segments", "quality", "recovered",
    "recovery_note", "imported_from", "imported_format", fmt.RIG_INFO_ATTR})


class RecorderError(RuntimeError):
    """Recording could not continue; the message says what was kept and where."""

    def __init__(self, message: str, saved: "SavedEpisode | None" = None):
        super().__init__(message)
        self.saved = saved


@dataclass
class SavedEpisode:
    name: str
    path: Path
    steps: int
    duration_s: float
    quality: QualityReport
    segments: list[Segment] = field(default_factory=list)
    save_latency_s: float = float("nan")  # stop() call to file renamed into the dataset
    recovered: bool = False


def publish(tmp: Path, final: Path) -> None:
    """Move a complete, fsynced file into place without ever replacing an existing episode."""
    try:
        os.link(tmp, final)
        os.unlink(tmp)
    except FileExistsError:
        raise RecorderError(f"{final} already exists; the new episode stays at {tmp}") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if final.exists():
            raise RecorderError(f"{final} already exists; the new episode stays at {tmp}") from None
        os.replace(tmp, final)
    fsync_path(final.parent)


def check_extra_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Extra episode attributes as stored: str / bool / int / float as they are, anything else JSON-serialisable
    (dict, list, None) as its JSON text. Reserved names (RESERVED_ATTRS) and non-JSON values raise ValueError."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise ValueError(f"extra attribute name must be a non-empty string without '/', not {k!r}")
        if k in RESERVED_ATTRS:
            raise ValueError(f"{k!r} is an attribute the recorder writes itself; choose another name")
        if isinstance(v, (str, bool, int, float)):
            out[k] = v
        else:
            try:
                out[k] = json.dumps(v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"extra attribute {k!r}: not JSON-serialisable ({e})") from None
    return out


def finalize_file(builder: EpisodeFileBuilder, final: Path, header: Mapping[str, Any],
                  marks: Sequence[tuple[int, str]], writer_dropped: Sequence[int] | None = None,
                  extra_attrs: Mapping[str, Any] | None = None) -> SavedEpisode:
    """Quality report, segments and attributes, then close, fsync and publish. Shared with recovery/import.
    Attributes: the recorder's own, then the header's "extra_attrs" (EpisodeWriter.set_extra_attrs; in a journal
    header too, so a recovered episode keeps them), then `extra_attrs`."""
    builder.flush()
    n = builder.complete_steps
    thresholds = QualityThresholds(**header.get("thresholds", {}))
    control_hz = header.get("control_hz")
    measured = bool(header.get("timestamps_measured", True))
    trial = fmt.TRIAL_ATTR in {**dict(header.get("extra_attrs") or {}), **dict(extra_attrs or {})}
    qi = builder.quality_input(control_hz, writer_dropped, measured, sim=bool(header.get("sim", False)), trial=trial)
    report = compute_quality(qi, thresholds)
    segments = segments_from_phases(builder.phase_runs, n) + segments_from_marks(marks, n)
    duration = float(qi.t[-1] - qi.t[0]) if n > 1 else 0.0
    attrs = {
        "sim": bool(header.get("sim", False)),
        "sim_seed": -1 if header.get("sim_seed") is None else int(header["sim_seed"]),  # reproduces the scene on replay
        "task": header.get("task", ""),
        "outcome": fmt.check_outcome(header.get("outcome", "unlabeled")),
        "notes": header.get("notes", ""),
        "rig_config": header.get("rig_config", ""),
        "created": header.get("created", ""),
        "control_hz": float(control_hz) if control_hz else float("nan"),
        "timestamps_measured": measured,
        "segments": fmt.segments_to_json(segments),
        "quality": report.to_json(),
        "recovered": False,
    }
    if header.get("rig_info"):  # recorder.rig_info.RigInfo.to_json() (absent: imports, episodes of tests)
        attrs[fmt.RIG_INFO_ATTR] = json.dumps(header["rig_info"])
    attrs.update(check_extra_attrs(header.get("extra_attrs") or {}))
    attrs.update(extra_attrs or {})
    builder.finish(attrs)
    publish(builder.path, final)
    return SavedEpisode(final.stem, final, n, duration, report, segments, recovered=bool(attrs["recovered"]))
