"""Reading a dataset writes nothing (issue 19, point 8): list, show, read, export, trial statistics and the training
loader work from a dataset folder on a real read-only mount and on a real full disk (tiny tmpfs mounts), and a
change of such a folder fails with a StoreError saying why, not an OSError traceback."""
from __future__ import annotations

import os
import subprocess

import pytest

from recorder import format as fmt
from recorder.quality import QualityThresholds
from recorder.store import INDEX, DatasetStore, StoreError
from recorder.writer import DiskFullError
from tests.recorder.helpers import CAMS, tick
from tests.recorder.test_disk_full import mount_tmpfs, umount
from workbench.cli import main as cli_main

THRESHOLDS = QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0)


def _trial(policy_id: str, ended_by: str) -> dict:
    return {"trial_index": 0, "session": "2026-12-01T10:00:00", "policy": "runs/cube/policy", "policy_id": policy_id,
            "checkpoint": 2000, "mode": "sync", "prompts": [{"step": 0, "t": 0.0, "text": "transfer the cube",
                                                             "source": "initial"}],
            "interventions": [], "ended_by": ended_by, "time_to_success_s": 0.3, "duration_s": 0.4, "seed": 1}


def _record(store: DatasetStore) -> None:
    """Three demonstrations (one relabeled: a labels sidecar) and two trial episodes."""
    for k in range(5):
        w = store.new_episode(CAMS, task="transfer the cube", control_hz=50, thresholds=THRESHOLDS,
                              min_free_bytes=0)  # a 16 MB disk is below the default reserve
        if k >= 3:
            w.set_extra_attrs({fmt.TRIAL_ATTR: _trial("cube@2000", "success" if k == 3 else "time_limit")})
        for i in range(30):
            w.append(tick(i))
        w.set_outcome("success" if k != 4 else "failure")
        w.stop()
    store.label("episode_1", "failure", "dropped it")


def _fill(mnt) -> None:
    """Fill the file system to the last byte (ENOSPC)."""
    with open(mnt / "filler", "wb", buffering=0) as f:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                pass
    with pytest.raises(OSError):
        (mnt / "probe").write_bytes(b"x" * 8192)


@pytest.fixture(params=["read-only", "read-only, no .lock", "full disk"])
def frozen(request, tmp_path):
    """A dataset whose index cache is stale (deleted), on a tmpfs that is then remounted read-only or filled."""
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt, "16m")
    try:
        root = mnt / "ds"
        _record(DatasetStore(root))
        (root / INDEX).unlink()  # listing now wants to rewrite the index: it must not need to
        if "no .lock" in request.param:
            (root / ".lock").unlink()  # e.g. a dataset copied from another machine
        if request.param == "full disk":
            _fill(mnt)
        else:
            r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
            if r.returncode:
                pytest.skip(f"cannot remount the tmpfs read-only here ({r.stderr.strip()})")
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        yield request.param, root
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before, "reading wrote into the dataset"
    finally:
        umount(mnt)


def test_reading_writes_nothing(frozen, tmp_path, capsys):
    kind, root = frozen
    store = DatasetStore(root, create=False)
    eps = store.list()
    assert [e.name for e in eps] == [f"episode_{i}" for i in range(5)]
    assert [e.outcome for e in eps] == ["success", "failure", "success", "success", "failure"]  # sidecar applied
    assert store.list() == eps and not store.damaged()
    assert store.show("episode_1").notes == "dropped it"
    with store.open("episode_2") as r:
        assert r.info.steps == 30 and r.image(CAMS[1], 29).shape == (48, 64, 3)
    assert not (root / INDEX).exists()

    # the CLI: list, export (to a writable folder elsewhere), trial statistics
    assert cli_main(["episodes", str(root), "list"]) == 0
    out = capsys.readouterr()
    assert "5 episodes" in out.out and not out.err, out.err
    dest = tmp_path / "export"
    assert cli_main(["episodes", str(root), "export", str(dest)]) == 0
    assert (dest / "meta" / "info.json").is_file() and "exported 5 episodes" in capsys.readouterr().out
    assert cli_main(["trial-stats", str(root)]) == 0
    out = capsys.readouterr()
    assert "2 trials" in out.out and "cube@2000" in out.out and not out.err, out.err

    # what training reads: the episode set and its frames
    from finetune.episodes import load_episodes

    es = load_episodes(str(root))
    assert [e.id for e in es.episodes] == ["episode_0", "episode_1", "episode_2"]  # trials excluded by default
    assert es.frames.frames(2, 29)[CAMS[0]].shape == (48, 64, 3)
    es.frames.close()

    # a change fails with a message, not a traceback (and leaves nothing behind)
    why = "disk is full" if kind == "full disk" else "read-only file system"
    with pytest.raises(StoreError, match=why):
        store.label("episode_0", "failure")
    assert cli_main(["episodes", str(root), "label", "episode_0", "failure"]) == 2
    assert why in capsys.readouterr().err
    if kind == "full disk":  # recording refuses to start, with or without a reserve, and leaves nothing behind
        for reserve in (256 << 20, 0):
            with pytest.raises(DiskFullError, match="disk full; not recording"):
                store.new_episode(CAMS, min_free_bytes=reserve)
    else:
        with pytest.raises(StoreError, match=why):
            store.new_episode(CAMS)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert os.path.exists(root / "episode_0.hdf5")
