"""Normalization statistics in openpi's `norm_stats.json` layout, the z-score transform pi0 uses and the quantile
one pi0.5 uses.

File: {"norm_stats": {"state": {"mean": [...], "std": [...], "q01": [...], "q99": [...]}, "actions": {...}}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

EPS = 1e-6  # openpi's; LeRobot uses 1e-8


@dataclass(frozen=True)
class NormStats:
    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std", "q01", "q99"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, np.asarray(v, dtype=np.float64))
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} differ in shape")

    def to_json(self) -> dict[str, list[float]]:
        d = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        for name in ("q01", "q99"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v.tolist()
        return d

    @staticmethod
    def from_json(d: Mapping[str, object]) -> "NormStats":
        return NormStats(mean=d["mean"], std=d["std"], q01=d.get("q01"), q99=d.get("q99"))  # type: ignore[arg-type]

    def low_variance_dims(self, threshold: float = 1e-3) -> list[int]:
        """Dims whose std is ~0: z-scoring blows them up (a known cause of diverging fine-tunes)."""
        return [int(i) for i in np.flatnonzero(self.std < threshold)]


def load_norm_stats(path: str | Path) -> dict[str, NormStats]:
    """Reads a norm_stats.json file (or a folder containing one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "norm_stats.json"
    data = json.loads(path.read_text())
    if "norm_stats" not in data:
        raise ValueError(f"{path}: expected a top-level 'norm_stats' key, got {sorted(data)}")
    return {k: NormStats.from_json(v) for k, v in data["norm_stats"].items()}


def save_norm_stats(path: str | Path, stats: Mapping[str, NormStats]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"norm_stats": {k: (v.to_json() if isinstance(v, NormStats) else NormStats.from_json(v).to_json())
                           for k, v in stats.items()}}
    path.write_text(json.dumps(body, indent=2) + "\n")


def find_norm_stats(folder: str | Path) -> dict[str, Path]:
    """asset id -> norm_stats.json path under `folder/assets/`."""
    root = Path(folder) / "assets"
    return {p.parent.name: p for p in sorted(root.glob("*/norm_stats.json"))} if root.is_dir() else {}


def normalize(x: np.ndarray, stats: NormStats, eps: float = EPS) -> np.ndarray:
    """Z-scores the first len(mean) dims of x (the rest, e.g. zero padding, passes through)."""
    n = stats.mean.shape[-1]
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., :n] = (out[..., :n] - stats.mean) / (stats.std + eps)
    return out.astype(np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)


def _quantiles(stats: NormStats, n: int) -> tuple[np.ndarray, np.ndarray]:
    if stats.q01 is None or stats.q99 is None:
        raise ValueError("quantile normalization (pi0.5) needs q01 and q99 in the norm stats, which have only mean "
                         "and std: recompute the statistics from the episodes (finetune.stats.compute_norm_stats "
                         "stores all four)")
    return stats.q01[:n], stats.q99[:n]


def quantile_normalize(x: np.ndarray, stats: NormStats, eps: float = EPS) -> np.ndarray:
    """pi0.5 (openpi): 2 (x - q01) / (q99 - q01 + eps) - 1, so the 1st..99th percentile maps to [-1, 1]; eps keeps
    a zero range finite. The first len(q01) dims only (padding passes through)."""
    q01, q99 = _quantiles(stats, stats.mean.shape[-1])
    n = q01.shape[-1]
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., :n] = 2.0 * (out[..., :n] - q01) / (q99 - q01 + eps) - 1.0
    return out.astype(np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)


def quantile_unnormalize(x: np.ndarray, stats: NormStats, eps: float = EPS) -> np.ndarray:
    """Exact inverse of quantile_normalize: (y + 1) (q99 - q01 + eps) / 2 + q01."""
    q01, q99 = _quantiles(stats, stats.mean.shape[-1])
    n = q01.shape[-1]
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., :n] = (out[..., :n] + 1.0) * (q99 - q01 + eps) / 2.0 + q01
    return out.astype(np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)


def unnormalize(x: np.ndarray, stats: NormStats, eps: float = EPS) -> np.ndarray:
    n = stats.mean.shape[-1]
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., :n] = out[..., :n] * (stats.std + eps) + stats.mean
    return out.astype(np.asarray(x).dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)
