"""Synthetic teleop Ticks for recorder tests (the real workbench.teleop.Tick, without a rig)."""
from __future__ import annotations


import numpy as np

from drivers.cameras.base import Frame
from workbench.control import Tick

CAMS = ["cam_high", "cam_left_wrist"]
H, W = 48, 64


def image(i: int, cam: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A smooth moving pattern (compresses like a camera image, differs every step)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (xx * 4 + i * 3 + cam * 40) % 256
    img[..., 1] = (yy * 4 + i * 5) % 256
    img[..., 2] = ((xx + yy) * 2 + cam * 90) % 256
    return img


def tick(i: int, cams=CAMS, dt: float = 0.02, phase: str | None = None, hw_errors=None, repeat_every: int = 0,
         images: dict | None = None) -> Tick:
    t = 100.0 + i * dt
    q = np.sin(np.arange(14) + i * 0.01).astype(np.float32)
    frames = {}
    for c, cam in enumerate(cams):
        seq = i if not repeat_every else i - (i // repeat_every)
        img = images[cam] if images else image(seq, c)
        frames[cam] = Frame(img, t - 0.004, seq)
    return Tick(i, t, 1.7e9 + i * dt, q, q * 0.5, q * 100, q + 0.01, q + 0.005, frames, phase,
                    hw_errors or [], dt if i else float("nan"))


DAMAGED = {  # file -> words the reason must contain
    "episode_2": "truncated",
    "episode_3": "not an HDF5 file",
    "episode_4": "observations/qpos",
    "episode_5": "camera cam_left_wrist missing",
}


def damaged_dataset(root, steps: int = 60):
    """A dataset with two good episodes (0, 1: success) and four damaged ones (2-5, see DAMAGED): a truncated
    copy, random bytes, an episode without /observations/qpos and one without a camera."""
    import h5py

    from recorder.quality import QualityThresholds
    from recorder.store import DatasetStore

    store = DatasetStore(root)
    saved = []
    for _ in range(6):
        w = store.new_episode(CAMS, task="transfer the cube", control_hz=50,
                              thresholds=QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0))
        for i in range(steps):
            w.append(tick(i, phase="approach" if i < steps // 2 else "grasp"))
        w.set_outcome("success")
        saved.append(w.stop())
    data = saved[2].path.read_bytes()
    saved[2].path.write_bytes(data[: len(data) // 2])
    saved[3].path.write_bytes(np.random.default_rng(0).bytes(len(data) // 3))
    with h5py.File(saved[4].path, "a") as f:
        del f["observations/qpos"]
    with h5py.File(saved[5].path, "a") as f:
        del f["observations/images/cam_left_wrist"]
    return store
