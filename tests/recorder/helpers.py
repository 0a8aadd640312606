"""Synthetic ticks for recorder tests (the teleop Tick shape, without a rig)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivers.cameras.base import Frame

CAMS = ["cam_high", "cam_left_wrist"]
H, W = 48, 64


@dataclass
class FakeTick:
    index: int
    t: float
    t_wall: float
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray
    command: np.ndarray
    frames: dict
    phase: str | None = None
    hw_errors: list = field(default_factory=list)
    period: float = float("nan")


def image(i: int, cam: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A smooth moving pattern (compresses like a camera image, differs every step)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (xx * 4 + i * 3 + cam * 40) % 256
    img[..., 1] = (yy * 4 + i * 5) % 256
    img[..., 2] = ((xx + yy) * 2 + cam * 90) % 256
    return img


def tick(i: int, cams=CAMS, dt: float = 0.02, phase: str | None = None, hw_errors=None, repeat_every: int = 0,
         images: dict | None = None) -> FakeTick:
    t = 100.0 + i * dt
    q = np.sin(np.arange(14) + i * 0.01).astype(np.float32)
    frames = {}
    for c, cam in enumerate(cams):
        seq = i if not repeat_every else i - (i // repeat_every)
        img = images[cam] if images else image(seq, c)
        frames[cam] = Frame(img, t - 0.004, seq)
    return FakeTick(i, t, 1.7e9 + i * dt, q, q * 0.5, q * 100, q + 0.01, q + 0.005, frames, phase,
                    hw_errors or [], dt if i else float("nan"))
