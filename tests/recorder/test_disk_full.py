"""A full disk stops recording with a clear error and keeps what was written (a real, tiny tmpfs)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from recorder.writer import DiskFullError
from tests.recorder.helpers import CAMS, tick

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root / CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(store: DatasetStore, **kw) -> DiskFullError:
    rng = np.random.default_rng(0)
    noise = [{c: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for c in CAMS} for _ in range(8)]
    w = store.new_episode(CAMS, control_hz=50, sync_s=0.05, flush_s=0.01, **kw)
    try:
        for i in range(100_000):
            w.append(tick(i, images=noise[i % 8]))
            time.sleep(0.02)  # a 50 Hz loop: the writer meets the full disk while we still append
        w.stop()
    except DiskFullError as e:
        return e
    raise AssertionError("the disk never filled")


def _first_episode(store):
    w = store.new_episode(CAMS, control_hz=50)
    for i in range(20):
        w.append(tick(i))
    return w.stop()


def test_disk_nearly_full_stops_cleanly_and_keeps_everything(tiny_fs):
    store = DatasetStore(tiny_fs / "ds")
    first = _first_episode(store)
    err = fill(store, min_free_bytes=3 << 20)  # reserve 3 MB on an 8 MB disk
    assert "disk nearly full" in str(err) and "recording stopped" in str(err) and err.saved is not None
    with EpisodeReader(err.saved.path) as r:
        assert not r.info.recovered and r.info.steps == err.saved.steps > 10
        r.image(CAMS[0], r.info.steps - 1)
    with EpisodeReader(first.path) as r:  # the earlier episode is untouched
        assert r.info.steps == 20 and r.image(CAMS[1], 19).shape == (48, 64, 3)
    assert [e.name for e in store.list()] == [first.name, err.saved.name]


HARD = """
import sys
from pathlib import Path
from recorder.store import DatasetStore
from tests.recorder.test_disk_full import fill
e = fill(DatasetStore(Path(sys.argv[1])), min_free_bytes=0)
print("ERROR:", e, flush=True)
"""


def test_disk_full_without_reserve_salvages_from_the_journal(tiny_fs):
    """No reserve: a write really fails with ENOSPC; the journal's intact prefix becomes the episode."""
    store = DatasetStore(tiny_fs / "ds")
    first = _first_episode(store)
    r = subprocess.run([sys.executable, "-c", HARD, str(store.root)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ERROR:"))
    assert "disk full" in line and "recording stopped" in line
    if "Kept" in line:  # converted right away
        saved = [p for p in store.root.glob("episode_*.hdf5") if p != first.path]
        with EpisodeReader(saved[0]) as rd:
            assert rd.info.recovered and rd.info.steps > 10
            rd.image(CAMS[0], rd.info.steps - 1)
    else:  # no room even for that: the journal stays and the message says how to recover
        assert "recover" in line and list((store.root / ".incoming").glob("*.journal"))
    with EpisodeReader(first.path) as rd:
        assert rd.info.steps == 20
