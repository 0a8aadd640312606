"""SimCamera: rendered on demand (OSMesa/EGL), cached per tick, stamped with sim time."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from drivers.cameras.base import ALOHA_CAMERAS, Camera
from drivers.errors import CameraError
from drivers.sim import CAMERA_MAP, AlohaSim, SimCamera


@pytest.fixture(scope="module")
def sim():
    s = AlohaSim("transfer_cube", seed=0)
    yield s
    s.close()


def test_cameras_render_right_shape_nonempty(sim):
    cams = [SimCamera(sim, n, (48, 64)) for n in ALOHA_CAMERAS]
    for cam in cams:
        assert isinstance(cam, Camera)
        cam.connect()
        f = cam.latest()
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert f.image.std() > 5  # a real picture, not a blank buffer
    # distinct views
    imgs = [c.latest().image.astype(int) for c in cams]
    assert all(np.abs(imgs[0] - im).mean() > 1 for im in imgs[1:])


def test_cached_within_a_tick_and_stamped(sim):
    cam = SimCamera(sim, "cam_high", (60, 80))
    cam.connect()
    before = sim.renders.renders
    a, b = cam.latest(), cam.latest()
    assert a is b and sim.renders.renders == before + 1
    other = SimCamera(sim, "top", (60, 80))  # same MuJoCo camera and size: shares the tick's render
    other.connect()
    assert other.latest().image is a.image and sim.renders.renders == before + 1
    assert a.t == sim.time and a.seq == sim.tick
    sim.step()
    c = cam.latest()
    assert c.seq == a.seq + 1 and c.t == pytest.approx(a.t + 0.02)
    st = cam.stats()
    assert st.frames == 2 and st.repeated == 1 and st.dropped == 0


def test_render_reflects_motion(sim):
    cam = SimCamera(sim, "cam_right_wrist", (48, 64))
    cam.connect()
    first = cam.latest().image.astype(int)
    ix = sim.arm_index("right")
    sim.data.ctrl[ix.actuators[0]] = 0.6  # swing the right waist: its wrist camera sees another scene
    sim.step(40)
    assert np.abs(cam.latest().image.astype(int) - first).mean() > 2


def test_render_from_another_thread(sim):
    cam = SimCamera(sim, "cam_low", (32, 48))
    cam.connect()
    out = {}

    def worker():
        out["frame"] = cam.latest()

    t = threading.Thread(target=worker)
    t.start()
    t.join(60)
    assert out["frame"].image.shape == (32, 48, 3) and out["frame"].image.std() > 5


def test_mapping_and_errors(sim):
    assert CAMERA_MAP == {"cam_high": "top", "cam_low": "angle", "cam_left_wrist": "left_wrist",
                          "cam_right_wrist": "right_wrist"}
    assert SimCamera(sim, "front_close").mujoco_camera == "front_close"
    with pytest.raises(CameraError):
        SimCamera(sim, "cam_nowhere")
    cam = SimCamera(sim, "cam_high")
    with pytest.raises(CameraError):
        cam.latest()  # not connected


def test_insertion_model_has_all_aloha_views():
    s = AlohaSim("insertion", seed=0)
    for n in ALOHA_CAMERAS:
        cam = SimCamera(s, n, (24, 32))
        cam.connect()
        assert cam.latest().image.shape == (24, 32, 3)
    s.close()
