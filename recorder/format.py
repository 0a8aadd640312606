"""Episode file layout: names, version and small helpers shared by the writer, reader and tools.

One HDF5 file per episode. The ALOHA/ACT core (``/observations/*``, ``/action``, JPEG image rows,
``/compress_len``) is laid out exactly as ALOHA 2 writes it so existing loaders read our files; everything
else lives under names ALOHA tooling ignores. See docs/episode-format.md for the full description.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

FORMAT_NAME = "aloha-workbench-episode"
FORMAT_VERSION = 1

EPISODE_SUFFIX = ".hdf5"  # ALOHA's extension: ALOHA/ACT loaders glob and open `episode_<i>.hdf5`
EPISODE_RE = re.compile(r"^episode_(\d+)\.hdf5$")

JPEG_QUALITY = 50  # ALOHA 2's quality; ~10-40 kB per 640x480 frame
IMAGE_CHUNK_BYTES = 4096  # column chunk of the padded JPEG rows: padding beyond a row's length is never stored

# ALOHA core
QPOS = "observations/qpos"
QVEL = "observations/qvel"
EFFORT = "observations/effort"
ACTION = "action"
IMAGES = "observations/images"  # /<cam>: (T, padded_len) uint8 JPEG rows
COMPRESS_LEN = "compress_len"  # (n_cams, T) true JPEG lengths, cameras in attr `camera_names` order
# extensions
COMMAND = "command"  # (T, 14) what the safety layer sent to the followers
TIME_T = "timestamps/t"  # (T,) rig clock at the start of the tick (monotonic, or sim time)
TIME_WALL = "timestamps/t_wall"  # (T,) time.time() at the start of the tick
CAMERAS = "cameras"  # /<cam>/{t, seq, crc32}: capture time, device sequence number, CRC-32 of the JPEG bytes
PHASE = "phase"  # (T,) utf-8 phase label per step (scripted demonstrator), absent when unknown

STATE_KEYS: tuple[str, ...] = (QPOS, QVEL, EFFORT, ACTION, COMMAND)

Outcome = Literal["success", "failure", "partial", "unlabeled", "aborted"]
# partial: trials that got part-way; aborted: trials cut short by an error, the e-stop, refused chunks or a crash
# (they say nothing of the policy: statistics count them apart, never as failures)
OUTCOMES: tuple[str, ...] = ("success", "failure", "partial", "unlabeled", "aborted")


def episode_name(index: int) -> str:
    return f"episode_{index}"


def episode_index(name: str) -> int | None:
    m = EPISODE_RE.match(name if name.endswith(EPISODE_SUFFIX) else name + EPISODE_SUFFIX)
    return int(m.group(1)) if m else None


# Segment lanes: "auto" = the demonstrator's phases, "operator" = marks and edits by a person, "prompt" = the
# language command in force during a trial (typed by the operator or issued by a high-level policy),
# "correction" = operator takeover spans in a trial (HG-DAgger data). Each lane is a non-overlapping partition of
# (part of) the episode; the lanes may overlap each other.
LANES: tuple[str, ...] = ("auto", "operator", "prompt", "correction")
Lane = Literal["auto", "operator", "prompt", "correction"]
TRIAL_ATTR = "trial"  # episode attribute: JSON of workbench.deploy.trials.TrialInfo (absent on demonstrations)
# episode attribute: JSON of recorder.rig_info.RigInfo, the recording rig's name, backend, control rate, cameras,
# joint names and gripper constants (absent on imports and on episodes recorded before it: see recorder.rig_info)
RIG_INFO_ATTR = "rig_info"


@dataclass(frozen=True)
class Segment:
    """A labelled span of steps, [start, end) (end exclusive), in one lane (see `LANES`)."""

    start: int
    end: int
    text: str
    lane: str = "operator"

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"bad segment [{self.start}, {self.end}) {self.text!r}: needs 0 <= start < end")
        if self.lane not in LANES:
            raise ValueError(f"segment lane must be one of {', '.join(LANES)}, not {self.lane!r}")


def segments_to_json(segments: list[Segment]) -> str:
    return json.dumps([asdict(s) for s in segments])


def segments_from_dicts(items: list[dict]) -> tuple[list[Segment], bool]:
    """Segments and whether they carry lanes (files before lanes existed do not: see segments.normalize_legacy).
    Empty spans (legal in old files) are dropped."""
    laned = all("lane" in d for d in items)
    out = [Segment(int(d["start"]), int(d["end"]), str(d["text"]), str(d.get("lane", "operator")))
           for d in items if int(d["end"]) > int(d["start"])]
    return out, laned


def segments_from_json(text: str | bytes | None) -> list[Segment]:
    if not text:
        return []
    return segments_from_dicts(json.loads(text))[0]


def check_outcome(outcome: str) -> str:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    return outcome


def attr_str(value: Any) -> str:
    """HDF5 string attributes come back as str or bytes depending on how they were written."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
