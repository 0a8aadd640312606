"""Synthetic teleop Ticks for recorder tests (the real workbench.teleop.Tick, without a rig)."""
from __future__ import annotations


import numpy as np

from drivers.cameras.base import Frame
from workbench.teleop import Tick

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
