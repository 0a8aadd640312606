"""Segments: two non-overlapping lanes; overlapping input is resolved (split/trim), old overlapping files are
normalized without losing labels, the CLI and the store agree, and the export keeps the task prompt."""
from __future__ import annotations

import json

import h5py
import pyarrow.parquet as pq

from recorder.export_lerobot import export_lerobot
from recorder.format import Segment
from recorder.quality import QualityThresholds
from recorder.segments import insert, lane, normalize_legacy, subtask_per_step
from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, tick
from workbench.cli import main

SHORT_OK = QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0)


def _record(store, n=40, marks=((10, "grasp the cube"),)):
    w = store.new_episode(CAMS, task="transfer the cube", control_hz=50, thresholds=SHORT_OK)
    for i in range(n):
        for step, label in marks:
            if i == step:
                w.mark_segment(label)
        w.append(tick(i, phase="approach" if i < n // 2 else "reach"))
    return w.stop()


def test_a_new_segment_splits_or_trims_its_lane_only():
    segs = [Segment(0, 100, "reach", "auto"), Segment(0, 50, "a"), Segment(50, 100, "b")]
    out = insert(segs, Segment(40, 60, "grasp"))
    assert lane(out, "operator") == [Segment(0, 40, "a"), Segment(40, 60, "grasp"), Segment(60, 100, "b")]
    assert lane(out, "auto") == [Segment(0, 100, "reach", "auto")]
    out = insert(out, Segment(45, 55, "pinch"))  # inside one segment: split in two
    assert [(s.start, s.end, s.text) for s in lane(out, "operator")] == [
        (0, 40, "a"), (40, 45, "grasp"), (45, 55, "pinch"), (55, 60, "grasp"), (60, 100, "b")]


def test_old_overlapping_segments_are_normalized_without_losing_labels():
    # the episode: the demonstrator's phases and the operator's marks interleaved in one list
    old = [Segment(5, 135, "approach"), Segment(121, 371, "reach"), Segment(135, 175, "grasp the cube"),
           Segment(135, 175, "pinch"), Segment(0, 20, "x"), Segment(0, 10, "y"), Segment(10, 20, "z")]
    phases = [Segment(5, 121, "approach", "auto"), Segment(121, 371, "reach", "auto")]
    out = normalize_legacy(old, phases, 400)
    assert lane(out, "auto") == [Segment(121, 371, "reach", "auto")]
    ops = lane(out, "operator")
    for a, b in zip(ops, ops[1:]):
        assert a.end <= b.start  # no overlap left
    texts = " / ".join(s.text for s in out)
    for s in old:
        assert s.text in texts  # every label survives
    assert Segment(135, 175, "grasp the cube / pinch") in ops  # identical spans merged


def test_store_and_cli_resolve_overlaps_and_read_old_files(tmp_path, capsys):
    store = DatasetStore(tmp_path)
    saved = _record(store)
    info = store.show(saved.name)
    assert lane(info.segments, "auto") == [Segment(0, 20, "approach", "auto"), Segment(20, 40, "reach", "auto")]
    assert lane(info.segments, "operator") == [Segment(10, 40, "grasp the cube")]
    assert main(["episodes", str(tmp_path), "annotate", saved.name, "15", "25", "lift", "it"]) == 0
    out = capsys.readouterr().out
    assert "[10, 15) grasp the cube" in out and "[15, 25) lift it" in out and "[25, 40) grasp the cube" in out
    assert lane(store.show(saved.name).segments, "auto") == lane(info.segments, "auto")  # other lane untouched
    # an old file: segments without lanes, overlapping, in the file's attribute
    with h5py.File(saved.path, "a") as f:
        f.attrs["segments"] = json.dumps([{"start": 0, "end": 20, "text": "approach"},
                                          {"start": 20, "end": 40, "text": "reach"},
                                          {"start": 5, "end": 30, "text": "grasp"}])
    (tmp_path / f"{saved.name}.labels.json").unlink()
    segs = store.show(saved.name).segments
    assert lane(segs, "auto") == [Segment(0, 20, "approach", "auto"), Segment(20, 40, "reach", "auto")]
    assert lane(segs, "operator") == [Segment(5, 30, "grasp")]


def test_export_keeps_the_task_prompt_and_exports_segments_as_subtasks(tmp_path):
    store = DatasetStore(tmp_path / "ds")
    path = _record(store).path
    out = tmp_path / "lerobot"
    res = export_lerobot([path], out)
    assert res.tasks == ["transfer the cube"]
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pydict()
    assert {tasks["task"][tasks["task_index"].index(t)] for t in data["task_index"]} == {"transfer the cube"}
    sub = pq.read_table(out / "meta" / "subtasks.parquet").to_pydict()
    per_frame = [sub["subtask"][sub["subtask_index"].index(i)] for i in data["subtask_index"]]
    assert per_frame[:10] == ["approach"] * 10 and per_frame[10:] == ["grasp the cube"] * 30  # operator over auto
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["subtask_index"]["dtype"] == "int64" and info["workbench"]["task_source"] == "task"
    # sub-task training is an explicit choice
    res = export_lerobot([path], out, overwrite=True, task_source="segments")
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pydict()
    assert [tasks["task"][tasks["task_index"].index(t)] for t in data["task_index"]][:11] == ["approach"] * 10 + [
        "grasp the cube"]


def test_subtask_per_step_prefers_the_operator_lane():
    segs = [Segment(0, 4, "auto a", "auto"), Segment(2, 3, "op")]
    assert subtask_per_step(segs, 6) == ["auto a", "auto a", "op", "auto a", None, None]
