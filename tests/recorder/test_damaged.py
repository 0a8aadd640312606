"""A dataset with damaged episodes (truncated, random bytes, no qpos, a missing camera) keeps working: the store,
`workbench episodes list|show|export|rm|recover` and the export API use the good episodes and name each damaged
file and why."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from recorder.export_lerobot import ExportError, export_lerobot
from recorder.store import DatasetStore, StoreError
from tests.recorder.helpers import DAMAGED, damaged_dataset
from workbench.cli import main


@pytest.fixture
def ds(tmp_path):
    damaged_dataset(tmp_path / "ds")
    return tmp_path / "ds"


def test_store_lists_good_episodes_and_names_each_damaged_one(ds):
    store = DatasetStore(ds, create=False)
    assert [e.name for e in store.list()] == ["episode_0", "episode_1"]
    bad = {e.name: e.damaged for e in store.damaged()}
    assert set(bad) == set(DAMAGED)
    for name, words in DAMAGED.items():
        assert words in bad[name], (name, bad[name])
    with pytest.raises(StoreError, match="episode_2.hdf5 is damaged: truncated"):
        store.show("episode_2")
    info = store.show("episode_5")  # readable, but a camera is missing: the quality report says which
    assert info.problems and info.quality.status == "fail"
    assert "cam_left_wrist" in info.quality.check("file_integrity").detail


def test_export_api_refuses_a_damaged_episode_by_name_before_writing(ds, tmp_path):
    store = DatasetStore(ds, create=False)
    with pytest.raises(ExportError, match=r"episode_5.hdf5: camera cam_left_wrist missing"):
        export_lerobot([store.path(n) for n in ("episode_0", "episode_5")], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    res = export_lerobot([store.path(e.name) for e in store.list()], tmp_path / "out")
    assert res.episodes == 2


def test_cli_list_show_export_keep_working(ds, tmp_path, capsys):
    assert main(["episodes", str(ds), "list"]) == 0
    out = capsys.readouterr().out
    assert "episode_0" in out and "episode_1" in out and "2 episodes" in out
    for name, words in DAMAGED.items():
        line = next(line for line in out.splitlines() if f"DAMAGED {name}.hdf5" in line)
        assert words in line

    assert main(["episodes", str(ds), "show", "episode_3"]) == 2  # a plain message, not a traceback
    err = capsys.readouterr().err
    assert err.startswith("error: episode_3.hdf5 is damaged: not an HDF5 file") and "Traceback" not in err
    assert main(["episodes", str(ds), "show", "episode_5"]) == 0
    out = capsys.readouterr().out
    assert "DAMAGED: camera cam_left_wrist missing" in out and "file_integrity" in out

    assert main(["episodes", str(ds), "export", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipping 4 damaged" in out and "exported 2 episodes" in out
    for name in DAMAGED:
        assert f"DAMAGED {name}.hdf5" in out
    info = json.loads((tmp_path / "out" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
    # a second export to the same folder is refused unless --overwrite
    assert main(["episodes", str(ds), "export", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["episodes", str(ds), "export", str(tmp_path / "out"), "--overwrite"]) == 0


def test_rm_and_recover_quarantine_damaged_files(ds, capsys):
    assert main(["episodes", str(ds), "rm", "episode_2"]) == 0  # the trash is not a failure source
    assert main(["episodes", str(ds), "export", str(ds.parent / "x"), "--outcome", "success"]) == 0
    capsys.readouterr()
    assert main(["episodes", str(ds), "recover"]) == 0
    out = capsys.readouterr().out
    assert "4 damaged" in out and "--quarantine" in out
    assert main(["episodes", str(ds), "recover", "--quarantine"]) == 0
    out = capsys.readouterr().out
    assert out.count("quarantined") == 4
    store = DatasetStore(ds, create=False)
    assert store.damaged(include_deleted=True) == [] and [e.name for e in store.list()] == ["episode_0", "episode_1"]
    reasons = sorted(p.name for p in (ds / ".quarantine").glob("*.reason.txt"))
    assert "episode_2.hdf5.reason.txt" in reasons and "episode_3.hdf5.reason.txt" in reasons
    assert main(["episodes", str(ds), "recover"]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def test_a_file_as_dataset_folder_and_an_unwritable_export_get_plain_messages(ds, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main(["episodes", str(f), "list"]) == 2
    assert "is a file, not a dataset folder" in capsys.readouterr().err
    with pytest.raises(StoreError, match="is a file"):
        DatasetStore(f)
    # /proc refuses new folders even to root: the failure names the operator's folder, not our `.partial`
    unwritable = "/proc/aloha_export"
    assert main(["episodes", str(ds), "export", unwritable]) == 2
    err = capsys.readouterr().err
    assert unwritable in err and ".partial" not in err and "Traceback" not in err


def test_opening_a_store_writes_nothing(tmp_path):
    store = DatasetStore(tmp_path / "aloha_data" / "default")
    assert store.list() == [] and not (tmp_path / "aloha_data").exists()


def test_export_reads_back_the_subtask_table(ds, tmp_path):
    store = DatasetStore(ds, create=False)
    export_lerobot([store.path("episode_0")], tmp_path / "out")
    sub = pq.read_table(tmp_path / "out" / "meta" / "subtasks.parquet").to_pydict()
    assert sub["subtask"] == ["approach", "grasp"]
