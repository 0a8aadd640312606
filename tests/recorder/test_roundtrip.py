"""Every field round-trips; ACT-style loaders and ALOHA 1/2 files interoperate."""
from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest

from recorder import format as fmt
from recorder.format import Segment
from recorder.importer import import_aloha_folder
from recorder.quality import QualityThresholds
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from recorder.writer import encode_jpeg
from tests.recorder.helpers import CAMS, H, W, image, tick


def record(store, n=120, cams=CAMS, **kw):
    w = store.new_episode(cams, task="transfer the cube", control_hz=50, rig_config='[rig]\nname = "sim"\n',
                          sim=True, **kw)
    ticks = []
    for i in range(n):
        tk = tick(i, cams, phase="approach" if i < 40 else "grasp", hw_errors=["left gripper overload"] if i == 7 else [])
        ticks.append(tk)
        if i == 60:
            w.mark_segment("lift")
        if i == 90:
            w.mark_segment("")
        w.append(tk)
    w.set_outcome("success", "clean run")
    return w.stop(), ticks


def test_round_trip_every_field(tmp_path):
    store = DatasetStore(tmp_path)
    saved, ticks = record(store)
    assert saved.steps == 120 and saved.path.name == "episode_0.hdf5"
    with EpisodeReader(saved.path) as r:
        info = r.info
        for key, attr in (("qpos", "qpos"), ("qvel", "qvel"), ("effort", "effort"), ("action", "action"),
                          ("command", "command")):
            np.testing.assert_array_equal(getattr(r, key), np.stack([getattr(t, attr) for t in ticks]).astype(np.float32))
        np.testing.assert_array_equal(r.t, [t.t for t in ticks])
        np.testing.assert_array_equal(r.t_wall, [t.t_wall for t in ticks])
        for cam in CAMS:
            np.testing.assert_array_equal(r.camera_t(cam), [t.frames[cam].t for t in ticks])
            np.testing.assert_array_equal(r.camera_seq(cam), [t.frames[cam].seq for t in ticks])
            for i in (0, 59, 119):
                img = r.image(cam, i)
                assert img.shape == (H, W, 3)
                assert np.abs(img.astype(int) - ticks[i].frames[cam].image.astype(int)).mean() < 12  # RGB kept
                assert r.jpeg(cam, i) == encode_jpeg(ticks[i].frames[cam].image)
        assert r.phase[0] == "approach" and r.phase[119] == "grasp"
        assert r.hw_errors == [(7, "left gripper overload")]
    assert info.source == "workbench" and info.format_version == fmt.FORMAT_VERSION
    assert info.task == "transfer the cube" and info.outcome == "success" and info.notes == "clean run"
    assert info.rig_config == '[rig]\nname = "sim"\n' and info.sim and info.control_hz == 50
    assert info.segments == [Segment(0, 40, "approach", "auto"), Segment(40, 120, "grasp", "auto"),
                             Segment(60, 90, "lift", "operator")]  # demonstrator phases and operator marks
    q = info.quality
    assert q.status == "fail" and q.check("servo_hw_errors").value == 1  # one overload -> fail
    assert q.check("control_rate").status == "n/a" and abs(q.check("control_rate").value - 50) < 1e-4  # sim: not graded
    assert q.check("dropped_frames/cam_high").value == 0
    assert q.thresholds == QualityThresholds().__dict__
    assert not list((tmp_path / ".incoming").iterdir())


def test_act_style_loader_reads_our_episode(tmp_path):
    saved, ticks = record(DatasetStore(tmp_path), n=30)
    # what ACT / ALOHA 2 loaders do
    with h5py.File(saved.path, "r") as root:
        assert root.attrs["compress"] and not root.attrs.get("sim") is None
        qpos = root["/observations/qpos"][()]
        action = root["/action"][()]
        assert qpos.shape == (30, 14) and action.shape == (30, 14)
        assert root["/observations/qvel"].shape == (30, 14) and root["/observations/effort"].shape == (30, 14)
        for cam in CAMS:
            rows = root[f"/observations/images/{cam}"]
            assert rows.ndim == 2 and rows.dtype == np.uint8
            for t in (0, 17, 29):
                img = cv2.imdecode(rows[t], 1)
                assert img.shape == (H, W, 3)
                assert np.abs(img.astype(int) - ticks[t].frames[cam].image.astype(int)).mean() < 12
            all_rows = rows[()]  # mobile-aloha style: whole dataset, then decode each row
            assert cv2.imdecode(all_rows[5], 1) is not None
        assert root["/compress_len"].shape == (len(CAMS), 30)


def _aloha1_file(path, n=6):
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = True
        obs = f.create_group("observations")
        for k in ("qpos", "qvel", "effort"):
            obs.create_dataset(k, data=np.random.default_rng(1).normal(size=(n, 14)))
        f.create_dataset("action", data=np.ones((n, 14)))
        imgs = obs.create_group("images")
        imgs.create_dataset("top", data=np.stack([image(i) for i in range(n)]), chunks=(1, H, W, 3))


def _aloha2_file(path, n=6, cams=("cam_high", "cam_low")):
    enc = {c: [encode_jpeg(image(i, k)) for i in range(n)] for k, c in enumerate(cams)}
    pad = max(len(b) for v in enc.values() for b in v) + 100
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = True
        obs = f.create_group("observations")
        for k in ("qpos", "qvel", "effort"):
            obs.create_dataset(k, data=np.zeros((n, 14)))
        f.create_dataset("action", data=np.zeros((n, 14)))
        imgs = obs.create_group("images")
        for c in cams:
            arr = np.zeros((n, pad), np.uint8)
            for i, b in enumerate(enc[c]):
                arr[i, :len(b)] = np.frombuffer(b, np.uint8)
            imgs.create_dataset(c, data=arr, chunks=(1, pad))
        f.create_dataset("compress_len", data=np.array([[len(b) for b in enc[c]] for c in cams]))
    return enc


def test_read_aloha1_and_aloha2_and_import(tmp_path):
    src = tmp_path / "aloha"
    src.mkdir()
    _aloha1_file(src / "episode_0.hdf5")
    enc = _aloha2_file(src / "episode_1.hdf5")
    with EpisodeReader(src / "episode_0.hdf5") as r:
        assert r.info.source == "aloha1" and r.info.cameras == ["top"] and r.info.steps == 6
        np.testing.assert_array_equal(r.image("top", 3), image(3))
        assert r.t is None
    with EpisodeReader(src / "episode_1.hdf5") as r:
        assert r.info.source == "aloha2" and r.info.steps == 6
        assert r.jpeg("cam_low", 2) == enc["cam_low"][2]
        assert r.image("cam_high", 4).shape == (H, W, 3)

    store = DatasetStore(tmp_path / "ds")
    res = import_aloha_folder(src, store, task="imported")
    assert not res.failed and len(res.imported) == 2
    names = [s.name for _, s in res.imported]
    with store.open(names[1]) as r:  # ALOHA 2 JPEG bytes carried over unchanged
        assert r.info.source == "workbench" and r.jpeg("cam_low", 2) == enc["cam_low"][2]
        assert r.info.quality.check("control_rate").status == "n/a"  # no measured timestamps to judge
    with store.open(names[0]) as r:
        assert np.abs(r.image("top", 3).astype(int) - image(3).astype(int)).mean() < 12
    assert [e.task for e in store.list()] == ["imported", "imported"]


def test_quality_flags_problems(tmp_path):
    store = DatasetStore(tmp_path)
    th = QualityThresholds()
    w = store.new_episode(CAMS, control_hz=50)
    frozen = {c: image(0, k) for k, c in enumerate(CAMS)}
    for i in range(150):
        tk = tick(i, dt=0.025, repeat_every=5, images=frozen if i < 120 else None)  # 40 Hz, 20% repeats
        tk.action = tk.qpos + (0.5 if i % 2 else 0.0)
        w.append(tk)
    q = w.stop().quality
    assert q.check("control_rate").status == "fail"  # 40 Hz < 42
    assert q.check("repeated_frames/cam_high").status == "fail"
    assert q.check("frozen/cam_high").status == "fail" and q.check("frozen/cam_high").value > th.frozen_s_fail
    assert q.check("tracking_error_p99").status == "fail"
    assert q.status == "fail"
    assert "control_rate" in q.format()


def test_unknown_quality_key_is_rejected():
    with pytest.raises(ValueError, match="unknown"):
        QualityThresholds.from_mapping({"min_rate_hz_fail": 40, "bogus": 1})
    assert QualityThresholds.from_mapping({"min_rate_hz_fail": 30}).min_rate_hz_fail == 30
