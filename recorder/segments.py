"""Segment annotations: operator boundary marks and demonstrator phases turned into [start, end) spans."""
from __future__ import annotations

from typing import Iterable

from recorder.format import Segment


def segments_from_marks(marks: Iterable[tuple[int, str]], n_steps: int) -> list[Segment]:
    """A mark (step, label) closes the open segment at `step` and opens `label` there; an empty label only
    closes. The last open segment ends with the episode. Steps before the first mark are unannotated."""
    out: list[Segment] = []
    open_: tuple[int, str] | None = None
    for step, label in sorted(marks, key=lambda m: m[0]):
        step = min(max(step, 0), n_steps)
        if open_ is not None and step > open_[0]:
            out.append(Segment(open_[0], step, open_[1]))
        open_ = (step, label) if label else None
    if open_ is not None and n_steps > open_[0]:
        out.append(Segment(open_[0], n_steps, open_[1]))
    return out


def segments_from_phases(runs: Iterable[tuple[int, str]], n_steps: int) -> list[Segment]:
    """Runs of one phase label (first step, label), as the writer collects them, become segments."""
    return segments_from_marks(runs, n_steps)


def validate_segments(segments: Iterable[Segment], n_steps: int) -> list[Segment]:
    segs = sorted(segments, key=lambda s: (s.start, s.end))
    for s in segs:
        if s.end > n_steps:
            raise ValueError(f"segment [{s.start}, {s.end}) {s.text!r} ends after the episode ({n_steps} steps)")
        if not s.text.strip():
            raise ValueError(f"segment [{s.start}, {s.end}) has no text")
    return segs


def task_per_step(segments: Iterable[Segment], n_steps: int, default: str) -> list[str]:
    """Per-step task strings: the covering segment's text (the later segment wins on overlap), else `default`."""
    out = [default] * n_steps
    for s in sorted(segments, key=lambda s: s.start):
        for i in range(s.start, min(s.end, n_steps)):
            out[i] = s.text
    return out
