"""Segment annotations: two non-overlapping lanes ("auto": demonstrator phases, "operator": marks and edits).

Why lanes: pi0's high-level / low-level split trains on one sub-task string per frame, so within a source the
spans must not overlap; the demonstrator's phases and an operator's marks are different sources (and
granularities), so each keeps its own lane instead of one silently hiding the other. Overlapping input within a
lane is resolved, never rejected: a new segment wins its span and splits or trims the neighbours it covers.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from recorder.format import LANES, Segment


def segments_from_marks(marks: Iterable[tuple[int, str]], n_steps: int, lane: str = "operator") -> list[Segment]:
    """A mark (step, label) closes the open segment at `step` and opens `label` there; an empty label only
    closes. The last open segment ends with the episode. Steps before the first mark are unannotated."""
    out: list[Segment] = []
    open_: tuple[int, str] | None = None
    for step, label in sorted(marks, key=lambda m: m[0]):
        step = min(max(step, 0), n_steps)
        if open_ is not None and step > open_[0]:
            out.append(Segment(open_[0], step, open_[1], lane))
        open_ = (step, label) if label else None
    if open_ is not None and n_steps > open_[0]:
        out.append(Segment(open_[0], n_steps, open_[1], lane))
    return out


def segments_from_phases(runs: Iterable[tuple[int, str]], n_steps: int) -> list[Segment]:
    """Runs of one phase label (first step, label), as the writer collects them, become "auto" segments."""
    return segments_from_marks(runs, n_steps, lane="auto")


def canonical(segments: Iterable[Segment]) -> list[Segment]:
    """The one order everything uses (CLI numbering, timeline, files): by lane, then by start."""
    return sorted(segments, key=lambda s: (LANES.index(s.lane), s.start, s.end))


def insert(segments: Sequence[Segment], new: Segment) -> list[Segment]:
    """`new` takes its span in its lane; segments of that lane it overlaps are trimmed, or split in two when it
    lands in their middle. Other lanes are untouched."""
    out: list[Segment] = []
    for s in segments:
        if s.lane != new.lane or s.end <= new.start or s.start >= new.end:
            out.append(s)
            continue
        if s.start < new.start:
            out.append(dataclasses.replace(s, end=new.start))
        if s.end > new.end:
            out.append(dataclasses.replace(s, start=new.end))
    out.append(new)
    return canonical(out)


def validate_segments(segments: Iterable[Segment], n_steps: int) -> list[Segment]:
    """Check each segment, then resolve overlaps in list order (later wins): non-overlapping lanes."""
    out: list[Segment] = []
    for s in segments:
        if s.end > n_steps:
            raise ValueError(f"segment [{s.start}, {s.end}) {s.text!r} ends after the episode ({n_steps} steps)")
        if not s.text.strip():
            raise ValueError(f"segment [{s.start}, {s.end}) has no text")
        out = insert(out, dataclasses.replace(s, text=s.text.strip()))
    return out


def normalize_legacy(segments: Sequence[Segment], phase_runs: Sequence[Segment], n_steps: int) -> list[Segment]:
    """Files written before lanes: segments equal to a demonstrator phase run go to "auto", the rest to
    "operator"; overlaps in a lane are resolved with the shorter segment on top (it is the more specific label),
    and no label is lost: identical spans are merged ("a / b"), a label hidden by shorter ones is appended to the
    label at its middle."""
    phases = {(p.start, p.end, p.text) for p in phase_runs}
    laned = [dataclasses.replace(s, lane="auto" if (s.start, s.end, s.text) in phases else "operator",
                                 end=min(s.end, n_steps) if n_steps else s.end)
             for s in segments if s.start < (n_steps or s.end)]
    out: list[Segment] = []
    for s in sorted(laned, key=lambda s: -(s.end - s.start)):
        twin = next((o for o in out if (o.lane, o.start, o.end) == (s.lane, s.start, s.end)), None)
        if twin is not None:
            if s.text != twin.text:
                out[out.index(twin)] = dataclasses.replace(twin, text=f"{twin.text} / {s.text}")
            continue
        out = insert(out, s)
    for s in laned:
        lane_texts = " / ".join(o.text for o in out if o.lane == s.lane)
        if s.text not in lane_texts.split(" / "):
            mid = (s.start + s.end) // 2
            host = next((o for o in out if o.lane == s.lane and o.start <= mid < o.end), None)
            if host is None:
                out = insert(out, s)
                continue
            out[out.index(host)] = dataclasses.replace(host, text=f"{host.text} / {s.text}")
    return canonical(out)


def lane(segments: Iterable[Segment], name: str) -> list[Segment]:
    return [s for s in canonical(segments) if s.lane == name]


def subtask_per_step(segments: Iterable[Segment], n_steps: int) -> list[str | None]:
    """The sub-task of each step: the operator's segment where there is one (a person's deliberate label), else
    the demonstrator's; None where neither lane covers the step."""
    out: list[str | None] = [None] * n_steps
    for name in ("auto", "operator"):  # "operator" overwrites; prompt and correction lanes are not sub-tasks
        for s in lane(segments, name):
            out[s.start:min(s.end, n_steps)] = [s.text] * (min(s.end, n_steps) - s.start)
    return out
