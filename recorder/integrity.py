"""Is an episode file whole? Checked when a dataset is indexed, so one damaged file is listed as damaged (with
the reason) and skipped, instead of crashing `list`, `export` or the Episodes tab later (e.g. a missing camera
at 21 % of an export)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py

from recorder import format as fmt
from recorder.quality import Check, QualityReport

REQUIRED: tuple[str, ...] = (fmt.QPOS, fmt.ACTION)  # what every reader of an episode needs
ALSO_OURS: tuple[str, ...] = (fmt.QVEL, fmt.EFFORT, fmt.TIME_T)  # what our own files always have


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """One line an operator understands, for a file HDF5 cannot open (or whose attributes are garbage)."""
    msg = str(exc)
    if not Path(path).exists():
        return "file is missing"
    if Path(path).stat().st_size == 0:
        return "empty file (0 bytes)"
    if "truncated" in msg:
        return "truncated file (cut short while copying or recording)"
    if "signature" in msg or "not an hdf5" in msg.lower():
        return "not an HDF5 file (random or foreign bytes)"
    return f"unreadable ({type(exc).__name__}: {msg})"


def file_problems(f: h5py.File, cameras: list[str], ours: bool) -> list[str]:
    """What is missing or inconsistent in an open episode file; [] when it is whole."""
    problems = [f"missing /{k}" for k in REQUIRED + (ALSO_OURS if ours else ()) if k not in f]
    steps = f[fmt.QPOS].shape[0] if fmt.QPOS in f else None
    for k in REQUIRED + ALSO_OURS:
        if k in f and steps is not None and f[k].shape[0] != steps:
            problems.append(f"/{k} has {f[k].shape[0]} rows, /{fmt.QPOS} {steps}")
    for i, cam in enumerate(cameras):
        key = f"{fmt.IMAGES}/{cam}"
        if key not in f:
            problems.append(f"camera {cam} missing (/{key})")
        elif steps is not None and f[key].shape[0] < steps:
            problems.append(f"camera {cam} has {f[key].shape[0]} frames for {steps} steps")
        elif ours and (fmt.COMPRESS_LEN not in f or f[fmt.COMPRESS_LEN].shape[0] <= i):
            problems.append(f"camera {cam}: no /{fmt.COMPRESS_LEN} row")
    return problems


def with_problems(report: QualityReport | None, problems: list[str]) -> QualityReport:
    """The quality report with a failing `file_integrity` check that names what is missing."""
    check = Check("file_integrity", "fail", float(len(problems)), "problems", "; ".join(problems))
    if report is None:
        return QualityReport("fail", [check])
    return dataclasses.replace(report, status="fail", checks=[check, *report.checks])
