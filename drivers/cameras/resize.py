"""Frame resizing shared by the robot side (serving.protocol: the client resizes before sending) and the model's
transforms (finetune.transforms): one function, so a chunk served from frames resized on the robot equals the
chunk served from full frames. The bottom layer, so both may import it (the client stays torch-free)."""
from __future__ import annotations

import cv2
import numpy as np


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
