"""Image transforms: rig cameras to pi0's slots (a missing camera masked), uint8 -> [-1, 1]. The resize with
padding is drivers.cameras.resize (shared with the robot-side client)."""
from __future__ import annotations

from typing import Mapping

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


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in [-1, 1] (pi0's SigLIP input scaling)."""
    return (np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


def from_unit_range(x: np.ndarray) -> np.ndarray:
    """Inverse of to_unit_range (exact on its outputs): 3xHxW in [-1, 1] -> HxWx3 uint8."""
    return np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def blank(size: int) -> np.ndarray:
    return np.zeros((size, size, 3), dtype=np.uint8)
