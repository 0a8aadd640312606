"""SIGKILL a recording subprocess, then recover: at most ~1 s lost, earlier episodes untouched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder import journal as jr
from recorder.reader import EpisodeReader
from recorder.recovery import recover_dataset
from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, tick

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(root: Path, steps: int, until) -> list[tuple[int, int, float]]:
    """Start the child, read its progress lines until `until(lines)`, SIGKILL it; returns the lines."""
    p = subprocess.Popen([sys.executable, "-m", "tests.recorder.crash_child", str(root), str(steps)],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + 60
    try:
        for raw in p.stdout:
            d, s, t = raw.split()
            lines.append((int(d), int(s), float(t)))
            if until(lines) or time.monotonic() > deadline:
                break
        os.kill(p.pid, signal.SIGKILL)
        kill_t = time.monotonic()
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    lines.append((-1, -1, kill_t))
    return lines


def _check_all_episodes(root: Path) -> list:
    infos = []
    for path in sorted(root.glob("episode_*.hdf5")):
        with EpisodeReader(path) as r:
            n = r.info.steps
            assert n > 0 and r.qpos.shape == (n, 14) and len(r.t) == n
            for cam in CAMS:
                assert r.image(cam, n - 1).shape == (120, 160, 3)
            infos.append(r.info)
    return infos


def test_sigkill_mid_episode_then_recovery(tmp_path):
    # one finished episode of 40 steps, then kill the second after >= 250 steps (~2.5 s)
    lines = _run_and_kill(tmp_path, 400, lambda ls: ls[-1][0] == 0 and ls[-1][1] >= 250)
    kill_t = lines[-1][2]
    appended = [s for d, s, t in lines[:-1] if d == 0 and t <= kill_t - 1.0]
    must_have = max(appended) if appended else 0
    assert list((tmp_path / ".incoming").glob("*.journal")), "the killed recording left its journal"

    res = DatasetStore(tmp_path).recover()
    assert len(res.recovered) == 1 and not res.quarantined, res.format()
    saved = res.recovered[0]
    assert saved.steps >= must_have, f"lost more than 1 s: {saved.steps} < {must_have}"
    info = _check_all_episodes(tmp_path)[-1]
    assert info.recovered and "recovered" in info.notes and info.quality is not None
    assert not list((tmp_path / ".incoming").iterdir())
    assert [e.name for e in DatasetStore(tmp_path).list()] == ["episode_0"]


def test_sigkill_at_random_moments_never_corrupts(tmp_path):
    """Episodes of 25 steps back to back: kills land in appends, stops, renames and journal removal."""
    rng = np.random.default_rng(7)
    for round_ in range(4):
        target = int(rng.integers(20, 90))
        _run_and_kill(tmp_path, 25, lambda ls, target=target: len(ls) >= target)
        res = recover_dataset(tmp_path)
        assert not res.quarantined and not res.live, res.format()
        _check_all_episodes(tmp_path)
        assert not [p for p in (tmp_path / ".incoming").iterdir() if p.suffix != ".lock"]
    names = [e.name for e in DatasetStore(tmp_path).list()]
    assert len(names) == len(set(names)) >= 4


def test_live_recording_is_left_alone_and_corrupt_journal_quarantined(tmp_path):
    store = DatasetStore(tmp_path)
    w = store.new_episode(CAMS)
    for i in range(5):
        w.append(tick(i))
    bad = tmp_path / ".incoming" / "episode_99.journal"
    bad.write_bytes(b"not a journal at all")
    res = store.recover()
    assert [p.name for p in res.live] == [w.journal_path.name]
    assert len(res.quarantined) == 1 and "bad magic" in res.quarantined[0][1]
    assert (tmp_path / ".quarantine" / "episode_99.journal.reason.txt").exists()
    assert w.stop().steps == 5


def test_torn_journal_tail_is_ignored(tmp_path):
    store = DatasetStore(tmp_path)
    w = store.new_episode(CAMS, control_hz=50)
    for i in range(30):
        w.append(tick(i))
    w._shutdown()  # simulate a crash after the journal is complete but before publishing
    w._journal.abandon()
    data = w.journal_path.read_bytes()
    w.journal_path.write_bytes(data[:-3000])  # tear the last records
    w._builder.close()
    res = recover_dataset(tmp_path)
    assert len(res.recovered) == 1 and 0 < res.recovered[0].steps < 30
