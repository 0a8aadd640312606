"""Builds one episode HDF5 file incrementally, in the layout of recorder.format.

Used by the streaming writer (rows arrive while recording), by crash recovery (rows come from a journal)
and by the ALOHA importer, so there is one code path that lays out an episode file.

JPEG rows live in a (T, width) uint8 dataset chunked (1, IMAGE_CHUNK_BYTES) and resizable in both
dimensions: a longer frame widens the dataset, and the padding of shorter rows is never written to disk
(unallocated chunks read back as zeros, which cv2.imdecode ignores) - ALOHA 2's padded layout without its
cost.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from recorder.durable import fsync_path
from drivers.arm import BIMANUAL_DOF
from recorder import format as fmt
from recorder.journal import StepRecord
from recorder.quality import CameraTrack, QualityInput

_GROW = 512


class EpisodeFileBuilder:
    def __init__(self, path: Path, cameras: Sequence[str], n_joints: int = BIMANUAL_DOF):
        self.path = Path(path)
        self.cameras = list(cameras)
        self.n_joints = n_joints
        self.f = h5py.File(self.path, "w")  # default libver: readable by old HDF5 in existing ALOHA tooling
        self._cap = 0
        self.n_steps = 0  # state rows received
        self.n_frames = [0] * len(self.cameras)  # image rows written per camera
        self._pending: list[StepRecord] = []
        self._fpending: list[list[tuple[int, int]]] = [[] for _ in self.cameras]  # (crc, len) per camera
        self._fwritten = [0] * len(self.cameras)
        self._width = [0] * len(self.cameras)
        self.phase_runs: list[tuple[int, str]] = []
        self.hw_errors: list[tuple[int, str]] = []
        f, nj = self.f, n_joints
        for key in fmt.STATE_KEYS:
            f.create_dataset(key, (0, nj), maxshape=(None, nj), dtype="f4", chunks=(256, nj))
        for key in (fmt.TIME_T, fmt.TIME_WALL):
            f.create_dataset(key, (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        for cam in self.cameras:
            g = f.require_group(f"{fmt.CAMERAS}/{cam}")
            g.create_dataset("t", (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            g.create_dataset("seq", (0,), maxshape=(None,), dtype="i8", chunks=(1024,))
            g.create_dataset("crc32", (0,), maxshape=(None,), dtype="u4", chunks=(1024,))
            f.create_dataset(f"{fmt.IMAGES}/{cam}", (0, 0), maxshape=(None, None), dtype="u1",
                             chunks=(1, fmt.IMAGE_CHUNK_BYTES), fillvalue=0)
        f.create_dataset(fmt.COMPRESS_LEN, (len(self.cameras), 0), maxshape=(len(self.cameras), None),
                         dtype="i4", chunks=(len(self.cameras), 1024))

    # -- rows ---------------------------------------------------------------------------------------------
    def _ensure_rows(self, n: int) -> None:
        if n <= self._cap:
            return
        self._cap = max(n, self._cap + _GROW)
        for cam in self.cameras:
            ds = self.f[f"{fmt.IMAGES}/{cam}"]
            ds.resize((self._cap, ds.shape[1]))

    def append_step(self, rec: StepRecord) -> None:
        if rec.index != self.n_steps:
            raise ValueError(f"step {rec.index} out of order (expected {self.n_steps})")
        self._pending.append(rec)
        self.n_steps += 1
        if rec.phase and (not self.phase_runs or self.phase_runs[-1][1] != rec.phase):
            self.phase_runs.append((rec.index, rec.phase))
        self.hw_errors.extend((rec.index, m) for m in rec.hw_errors)

    def append_frame(self, cam_index: int, step: int, jpeg: bytes) -> None:
        if step != self.n_frames[cam_index]:
            raise ValueError(f"frame for step {step} out of order (expected {self.n_frames[cam_index]})")
        ds = self.f[f"{fmt.IMAGES}/{self.cameras[cam_index]}"]
        self._ensure_rows(step + 1)
        n = len(jpeg)
        if n > ds.shape[1]:
            ds.resize((ds.shape[0], -(-n // fmt.IMAGE_CHUNK_BYTES) * fmt.IMAGE_CHUNK_BYTES))
        self._width[cam_index] = max(self._width[cam_index], n)
        if n:
            ds[step, :n] = np.frombuffer(jpeg, dtype=np.uint8)
        self._fpending[cam_index].append((zlib.crc32(jpeg), n))
        self.n_frames[cam_index] += 1

    def flush(self, sync: bool = False) -> None:
        """Write buffered rows; with sync, also flush HDF5 and fsync so the final close has little left to do."""
        if self._pending:
            recs, self._pending = self._pending, []
            start, end = recs[0].index, recs[-1].index + 1
            state = np.stack([r.state for r in recs])  # (k, 5, nj)
            for i, key in enumerate(fmt.STATE_KEYS):
                ds = self.f[key]
                ds.resize((end, self.n_joints))
                ds[start:end] = state[:, i]
            for key, vals in ((fmt.TIME_T, [r.t for r in recs]), (fmt.TIME_WALL, [r.t_wall for r in recs])):
                ds = self.f[key]
                ds.resize((end,))
                ds[start:end] = vals
            cam_t = np.stack([r.cam_t for r in recs])
            cam_seq = np.stack([r.cam_seq for r in recs])
            for c, cam in enumerate(self.cameras):
                g = self.f[f"{fmt.CAMERAS}/{cam}"]
                for name, vals in (("t", cam_t[:, c]), ("seq", cam_seq[:, c])):
                    g[name].resize((end,))
                    g[name][start:end] = vals
        for c, cam in enumerate(self.cameras):
            rows = self._fpending[c]
            if not rows:
                continue
            self._fpending[c] = []
            start = self._fwritten[c]
            end = start + len(rows)
            crc = self.f[f"{fmt.CAMERAS}/{cam}/crc32"]
            crc.resize((end,))
            crc[start:end] = [r[0] for r in rows]
            cl = self.f[fmt.COMPRESS_LEN]
            if cl.shape[1] < end:
                cl.resize((len(self.cameras), max(end, cl.shape[1] + 1024)))
            cl[c, start:end] = [r[1] for r in rows]
            self._fwritten[c] = end
        if sync:
            self.f.flush()
            fsync_path(self.path)

    @property
    def complete_steps(self) -> int:
        """Steps for which the state and every camera's frame arrived."""
        return min([self.n_steps, *self.n_frames]) if self.cameras else self.n_steps

    # -- finishing ----------------------------------------------------------------------------------------
    def quality_input(self, control_hz: float | None, writer_dropped: Sequence[int] | None = None,
                      timestamps_measured: bool = True, sim: bool = False) -> QualityInput:
        self.flush()
        n = self.complete_steps
        f = self.f
        tracks = {}
        for c, cam in enumerate(self.cameras):
            g = f[f"{fmt.CAMERAS}/{cam}"]
            tracks[cam] = CameraTrack(g["t"][:n], g["seq"][:n], g["crc32"][:n],
                                      int(writer_dropped[c]) if writer_dropped else 0)
        return QualityInput(
            t=f[fmt.TIME_T][:n], qpos=f[fmt.QPOS][:n], action=f[fmt.ACTION][:n], cameras=tracks,
            hw_errors=[(s, m) for s, m in self.hw_errors if s < n], control_hz=control_hz,
            timestamps_measured=timestamps_measured, t_wall=f[fmt.TIME_WALL][:n], sim=sim)

    def finish(self, attrs: dict) -> int:
        """Trim every dataset to the complete steps, write the root attributes, close and fsync.
        Returns the number of steps."""
        self.flush()
        n = self.complete_steps
        f = self.f
        for key in fmt.STATE_KEYS:
            f[key].resize((n, self.n_joints))
        for key in (fmt.TIME_T, fmt.TIME_WALL):
            f[key].resize((n,))
        for c, cam in enumerate(self.cameras):
            for name in ("t", "seq", "crc32"):
                f[f"{fmt.CAMERAS}/{cam}/{name}"].resize((n,))
            f[f"{fmt.IMAGES}/{cam}"].resize((n, self._width[c]))
        f[fmt.COMPRESS_LEN].resize((len(self.cameras), n))
        if self.phase_runs:
            phases = np.empty(n, dtype=object)
            phases[:] = ""
            bounds = [s for s, _ in self.phase_runs] + [n]
            for (s, p), e in zip(self.phase_runs, bounds[1:]):
                phases[min(s, n):min(e, n)] = p
            f.create_dataset(fmt.PHASE, data=phases.astype(h5py.string_dtype()), dtype=h5py.string_dtype())
        base = {
            "sim": False,
            "compress": True,
            "format": fmt.FORMAT_NAME,
            "format_version": fmt.FORMAT_VERSION,
            "camera_names": json.dumps(self.cameras),
            "hw_errors": json.dumps([(s, m) for s, m in self.hw_errors if s < n]),
        }
        base.update(attrs)
        for k, v in base.items():
            f.attrs[k] = v
        f.close()
        fsync_path(self.path)
        return n

    def close(self) -> None:
        """Close, also after a failed write: retry until HDF5 lets go of the file id, because an id left
        open is flushed again at interpreter exit, where HDF5 crashes on the same write error."""
        for _ in range(5):
            try:
                if self.f.id.valid:
                    self.f.close()
                return
            except Exception:  # noqa: BLE001 - disk full: the close-time flush may fail again
                continue
