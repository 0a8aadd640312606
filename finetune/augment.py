"""Image augmentation for fine-tuning, as openpi does it on the resized 224 px images: non-wrist cameras get a
random 95 % crop resized back and a rotation of up to +-5 degrees; every camera gets colour jitter (brightness 0.3,
contrast 0.4, saturation 0.5, as torchvision-style factors drawn from [1 - x, 1 + x]).

Randomness comes only from the generator passed in; the data pipeline derives one per sample from
(seed, epoch, sample index), so results do not depend on the worker that runs it nor on where a run resumed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: float = 0.95
    max_rotation_deg: float = 5.0
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    wrist_marker: str = "wrist"  # slots whose name contains this get colour jitter only


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample generator: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0xA06])


def crop_resize_rotate(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(round(h * cfg.crop_scale)), int(round(w * cfg.crop_scale))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = cv2.resize(img[y: y + ch, x: x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    angle = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def color_jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    x = img.astype(np.float32) * b
    np.clip(x, 0, 255, out=x)
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)  # RGB
    x = (x - gray.mean()) * c + gray.mean()
    np.clip(x, 0, 255, out=x)
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - gray) * s + gray
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class Augmenter:
    """Callable (slot, uint8 SxSx3) -> uint8 SxSx3 for PolicyTransforms.images, drawing from one generator."""

    def __init__(self, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> None:
        self.rng, self.cfg = rng, cfg

    def __call__(self, slot: str, img: np.ndarray) -> np.ndarray:
        if self.cfg.wrist_marker not in slot:
            img = crop_resize_rotate(img, self.rng, self.cfg)
        return color_jitter(img, self.rng, self.cfg)
