"""Shared helpers for the trainer tests (not a test module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
# --outcome all: the recorded sim episodes are failures (nobody drives the arms) and training takes successes only
# by default
TINY_ARGS = ["--config", "tiny", "--batch", "2", "--workers", "0", "--log-every", "1", "--val-every", "0",
             "--outcome", "all"]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    e.pop("WORLD_SIZE", None)
    return e


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "train", *args]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), env=env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def events(run_dir: Path) -> list[ev.Event]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [e for e in (ev.parse(line) for line in path.read_text().splitlines()) if e is not None]


def step_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss (the last report of a step wins: a resumed run repeats the steps after its checkpoint)."""
    return {e.step: e.loss for e in events(run_dir) if isinstance(e, ev.Step)}


def wait_for(predicate, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


_SIM: dict[str, Path] = {}


def sim_dataset() -> Path:
    """Three 2-second episodes recorded on the simulated rig by `workbench record`, once per test session."""
    if "ds" not in _SIM:
        import sys as _sys
        import tempfile

        _sys.path.insert(0, str(ROOT / "tests" / "finetune"))
        from data_helpers import record_sim

        _SIM["ds"] = record_sim(Path(tempfile.mkdtemp(prefix="sim_episodes_")) / "cube", episodes=3, seconds=2.0)
    return _SIM["ds"]
