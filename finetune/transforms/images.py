"""Image transforms: rig cameras to pi0's slots (a missing camera masked), resize with padding, uint8 -> [-1, 1]."""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np


def rename_cameras(frames: Mapping[str, np.ndarray | None], camera_map: tuple[tuple[str, str], ...],
                   slots: tuple[str, ...]) -> tuple[dict[str, np.ndarray | None], dict[str, bool]]:
    """Rig camera frames -> {slot: frame or None}, {slot: present}. Rig cameras without a slot (cam_low) are
    dropped; a slot whose camera is missing gets None and mask False (its tokens are not attended)."""
    by_slot = {slot: cam for cam, slot in camera_map}
    out: dict[str, np.ndarray | None] = {}
    masks: dict[str, bool] = {}
    for slot in slots:
        cam = by_slot.get(slot)
        img = frames.get(cam) if cam is not None else None
        out[slot] = img
        masks[slot] = img is not None
    return out, masks


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3: aspect preserved, centred, black padding (openpi's resize_with_pad).

    Shrinking averages areas (like PIL's antialiased bilinear, which openpi uses); enlarging is bilinear."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(img, dtype=np.uint8)
    ratio = max(w / size, h / size)
    nh, nw = max(1, int(h / ratio)), max(1, int(w / ratio))
    interp = cv2.INTER_AREA if ratio > 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=interp)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top: top + nh, left: left + nw] = resized
    return out


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in [-1, 1] (pi0's SigLIP input scaling)."""
    return (np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


def from_unit_range(x: np.ndarray) -> np.ndarray:
    """Inverse of to_unit_range (exact on its outputs): 3xHxW in [-1, 1] -> HxWx3 uint8."""
    return np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def blank(size: int) -> np.ndarray:
    return np.zeros((size, size, 3), dtype=np.uint8)
