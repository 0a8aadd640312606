"""Dataset store operations (also from concurrent processes), LeRobot v3.0 export read back, hub errors."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from recorder.export_lerobot import export_lerobot
from recorder.format import Segment
from recorder.quality import QualityThresholds
from recorder.store import DatasetStore, StoreError, select
from tests.recorder.helpers import CAMS, image, tick

ROOT = Path(__file__).resolve().parents[2]
SHORT_OK = QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0)  # these tests record a few steps


def _record(store, n, phases=True, task="transfer the cube"):
    w = store.new_episode(CAMS, task=task, control_hz=50, thresholds=SHORT_OK)
    for i in range(n):
        w.append(tick(i, phase=("approach" if i < n // 2 else "grasp") if phases else None))
    return w.stop()


def test_store_list_show_label_annotate_trash_restore(tmp_path):
    store = DatasetStore(tmp_path)
    a, b, c = (_record(store, 10) for _ in range(3))
    assert [e.name for e in store.list()] == ["episode_0", "episode_1", "episode_2"]
    store.label("1", "success", notes="nice")
    info = store.show("episode_1")
    assert info.outcome == "success" and info.notes == "nice"
    store.add_segment("episode_1", Segment(2, 6, "lift"))
    assert Segment(2, 6, "lift", "operator") in store.show("episode_1").segments
    with pytest.raises(ValueError):
        store.add_segment("episode_1", Segment(2, 60, "too long"))
    store.remove("episode_0")
    assert [e.name for e in store.list()] == ["episode_1", "episode_2"]
    assert [e.name for e in store.list(include_deleted=True) if e.deleted] == ["episode_0"]
    with pytest.raises(StoreError, match="trash"):
        store.path("episode_0")
    assert _record(store, 5).name == "episode_3"  # numbers are never reused
    store.restore("episode_0")
    (tmp_path / "index.json").unlink()  # the index is a cache: derivable from the files
    eps = {e.name: e for e in store.list()}
    assert set(eps) == {"episode_0", "episode_1", "episode_2", "episode_3"}
    assert eps["episode_1"].outcome == "success" and eps["episode_1"].segments == 3
    assert [e.name for e in select(eps.values(), outcomes={"success"}, quality={"pass"})] == ["episode_1"]


def _labeler(root, names, outcome, k):
    store = DatasetStore(root)
    for i in range(k):
        for n in names:
            store.label(n, outcome, notes=f"{outcome} {i}")
            store.list()


def test_concurrent_processes_keep_index_consistent(tmp_path):
    store = DatasetStore(tmp_path)
    for _ in range(4):
        _record(store, 5, phases=False)
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=_labeler, args=(tmp_path, ["episode_0", "episode_1"], "success", 15)),
          ctx.Process(target=_labeler, args=(tmp_path, ["episode_2", "episode_3"], "failure", 15))]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    idx = json.loads((tmp_path / "index.json").read_text())
    by = {e["name"]: e for e in idx["episodes"]}
    assert [by[f"episode_{i}"]["outcome"] for i in range(4)] == ["success", "success", "failure", "failure"]
    assert store.show("episode_3").notes == "failure 14"


def test_lerobot_export_of_filtered_subset_reads_back(tmp_path):
    store = DatasetStore(tmp_path / "ds")
    eps = [_record(store, n) for n in (12, 9, 7)]
    store.label(eps[0].name, "success")
    store.label(eps[2].name, "success")
    store.label(eps[1].name, "failure")
    chosen = select(store.list(), outcomes={"success"}, quality={"pass", "warn"})
    assert [e.name for e in chosen] == [eps[0].name, eps[2].name]
    out = tmp_path / "lerobot"
    res = export_lerobot([store.path(e.name) for e in chosen], out)
    assert res.frames == 19 and res.episodes == 2

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 50 and info["total_frames"] == 19
    assert info["features"]["observation.state"]["shape"] == [14]
    assert info["features"][f"observation.images.{CAMS[0]}"]["dtype"] == "video"
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    assert len(data["index"]) == 19 and data["episode_index"] == [0] * 12 + [1] * 7
    assert data["frame_index"][:3] == [0, 1, 2] and abs(data["timestamp"][12 + 3] - 3 / 50) < 1e-6
    np.testing.assert_allclose(np.array(data["observation.state"][0]), tick(0).qpos, rtol=1e-6)
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pydict()
    per_frame = [tasks["task"][tasks["task_index"].index(t)] for t in data["task_index"]]
    assert per_frame == ["transfer the cube"] * 19  # the task prompt stays the task, segments or not
    subtasks = pq.read_table(out / "meta" / "subtasks.parquet").to_pydict()
    sub = [subtasks["subtask"][subtasks["subtask_index"].index(t)] for t in data["subtask_index"]]
    assert sub[:6] == ["approach"] * 6 and sub[6:12] == ["grasp"] * 6  # segment text: its own field
    epi = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["length"] for e in epi] == [12, 7] and epi[1]["dataset_from_index"] == 12
    key = f"videos/observation.images.{CAMS[1]}"
    assert epi[1][f"{key}/from_timestamp"] == pytest.approx(12 / 50)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert len(stats["action"]["mean"]) == 14 and np.array(stats[f"observation.images.{CAMS[0]}"]["mean"]).shape == (3, 1, 1)

    for c, cam in enumerate(CAMS):
        path = out / "videos" / f"observation.images.{cam}" / "chunk-000" / "file-000.mp4"
        with av.open(str(path)) as cont:
            frames = [f.to_ndarray(format="rgb24") for f in cont.decode(video=0)]
        assert len(frames) == 19
        # frame 12 is episode 2's first step: same picture as its step 0 (lossy twice: JPEG then H.264)
        good = np.abs(frames[12].astype(int) - image(0, c).astype(int)).mean()
        swapped = np.abs(frames[12].astype(int) - image(0, c)[..., ::-1].astype(int)).mean()
        assert good < 20 and good < swapped / 2  # RGB, not BGR


HUB = """
import sys
from pathlib import Path
from recorder.hub import HubError, push_to_hub
try:
    push_to_hub(Path(sys.argv[1]), "someone/some-dataset", token="hf_fake")
except HubError as e:
    print("HUBERROR:", e)
"""


def test_export_splits_data_and_video_files_at_the_size_limits(tmp_path):
    """With tiny limits every episode lands in its own data file and video file (episodes are never split); each
    episode row points at its files and at its time span inside the video, as LeRobot's loader expects."""
    store = DatasetStore(tmp_path / "ds")
    lengths = (8, 6, 5)
    paths = [store.path(_record(store, n).name) for n in lengths]
    out = tmp_path / "lerobot"
    export_lerobot(paths, out, data_file_mb=1e-4, video_file_mb=1e-6)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["data_files_size_in_mb"] == 1e-4 and info["video_files_size_in_mb"] == 1e-6
    epi = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    for e, row in enumerate(epi):
        data = pq.read_table(out / info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                             file_index=row["data/file_index"])).to_pydict()
        assert row["data/file_index"] == e and data["episode_index"] == [e] * lengths[e]
        assert data["index"][0] == row["dataset_from_index"]
        for c, cam in enumerate(CAMS):
            k = f"videos/observation.images.{cam}"
            assert row[f"{k}/file_index"] == e and row[f"{k}/from_timestamp"] == 0.0
            assert row[f"{k}/to_timestamp"] == pytest.approx(lengths[e] / 50)
            video = out / info["video_path"].format(video_key=f"observation.images.{cam}",
                                                    chunk_index=row[f"{k}/chunk_index"], file_index=e)
            with av.open(str(video)) as cont:
                frames = [f.to_ndarray(format="rgb24") for f in cont.decode(video=0)]
            assert len(frames) == lengths[e]
            assert np.abs(frames[0].astype(int) - image(0, c).astype(int)).mean() < 20
    # default limits: one file of each for a small dataset
    export_lerobot(paths, out, overwrite=True)
    assert sorted(p.name for p in (out / "data" / "chunk-000").iterdir()) == ["file-000.parquet"]


def test_export_reports_progress_and_a_cancel_keeps_the_previous_export(tmp_path):
    store = DatasetStore(tmp_path / "ds")
    paths = [store.path(_record(store, n).name) for n in (8, 6, 5)]
    out = tmp_path / "lerobot"
    seen = []
    export_lerobot(paths[:1], out, progress=lambda text, f: seen.append((text, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert any(t.startswith(f"encoding {CAMS[1]}") for t, _ in seen)
    before = json.loads((out / "meta" / "info.json").read_text())

    class Cancelled(Exception):
        pass

    def cancel_midway(text, fraction):
        if fraction > 0.5:
            raise Cancelled

    with pytest.raises(Cancelled):
        export_lerobot(paths, out, overwrite=True, progress=cancel_midway)
    # the earlier export is intact and no partial folder is left behind
    assert json.loads((out / "meta" / "info.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "lerobot"]
    res = export_lerobot(paths, out, overwrite=True)  # and a full export replaces it
    assert res.root == out and res.episodes == 3
    assert json.loads((out / "meta" / "info.json").read_text())["total_episodes"] == 3


PUSH = """
import json, sys
from pathlib import Path
from recorder.hub import push_to_hub

cancel_at = float(sys.argv[2])
seen = []

def progress(text, fraction):
    seen.append(fraction)
    if fraction >= cancel_at:
        raise KeyboardInterrupt("operator cancelled")

try:
    url = push_to_hub(Path(sys.argv[1]), "lab/cube", token="hf_fake", progress=progress)
    print("URL", url)
except KeyboardInterrupt:
    print("CANCELLED")
print("FRACTIONS", json.dumps(seen))
"""


def test_hub_push_reports_progress_commits_once_and_a_cancel_commits_nothing(tmp_path):
    from tests.recorder.fake_hub import FakeHub

    store = DatasetStore(tmp_path / "ds")
    paths = [store.path(_record(store, n).name) for n in (8, 6)]
    out = tmp_path / "lerobot"
    export_lerobot(paths, out)
    hub = FakeHub()
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)

        def push(cancel_at: float) -> str:
            r = subprocess.run([sys.executable, "-c", PUSH, str(out), str(cancel_at)], cwd=ROOT, capture_output=True,
                               text=True, env=env, timeout=120)
            assert "FRACTIONS" in r.stdout, r.stderr[-3000:]
            return r.stdout

        stdout = push(cancel_at=0.3)  # cancelled part-way: nothing is committed
        assert "CANCELLED" in stdout and hub.commits == [] and hub.files == {}
        stdout = push(cancel_at=2.0)
        assert "URL" in stdout and hub.endpoint + "/datasets/lab/cube" in stdout
        fractions = json.loads(stdout.split("FRACTIONS", 1)[1])
        assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
        local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert hub.files == local  # every file, byte for byte, in one commit, tagged with the format version
        assert len(hub.commits) == 1 and hub.tags == ["v3.0"]
        assert len(fractions) == len(local) + 1
    finally:
        hub.close()


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_push_offline_gives_clear_error(tmp_path, env):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text("{}")
    r = subprocess.run([sys.executable, "-c", HUB, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    assert "HUBERROR:" in r.stdout, r.stderr[-2000:]
    assert "offline" in r.stdout.lower()


def test_an_export_that_selects_nothing_says_what_the_folder_holds(tmp_path, capsys):
    """`episodes DIR export --outcome success --quality pass` on a folder of failures: one line naming what was
    asked and what there is (by outcome and by quality), not "no episodes selected"."""
    from workbench.cli import main

    store = DatasetStore(tmp_path / "d")
    for _ in range(3):
        name = _record(store, 60).name
        store.label(name, "failure")
    rc = main(["episodes", str(tmp_path / "d"), "export", str(tmp_path / "out"), "--outcome", "success",
               "--quality", "pass"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to export: none of the 3 episodes has outcome success and quality pass" in err, err
    assert "by outcome 3 failure" in err and "by quality 3 " in err, err
    assert not (tmp_path / "out").exists()
