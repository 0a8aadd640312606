"""Builds one episode HDF5 file incrementally, in the layout of recorder.format.

Used by the streaming writer (rows arrive while recording), by crash recovery (rows come from a journal)
and by the ALOHA importer, so there is one code path that lays out an episode file.

JPEG rows live in a (T, width) uint8 dataset chunked (1, IMAGE_CHUNK_BYTES) and resizable in both
dimensions: a longer frame widens the dataset, and the padding of shorter rows is never written to disk
(unallocated chunks read back as zeros, which cv2.imdecode ignores) - ALOHA 2's padded layout without its
cost.

A full disk never reaches HDF5 (see `GuardedFile`): the builder raises the write error (OSError, errno kept)
itself, and closing or aborting the file afterwards always succeeds.
"""
from __future__ import annotations

import errno
import json
import logging
import os
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
log = logging.getLogger(__name__)


class GuardedFile:
    """The episode file as HDF5 sees it (h5py's "fileobj" driver), so that HDF5 itself never sees a failed write.

    HDF5 does not survive a failed write: a dataset or file close whose flush fails on a full disk (ENOSPC)
    leaves its identifier half torn down, and the library closes it again later - when h5py drops its last
    reference to the dataset, at the next close, or in HDF5's atexit handler - and crashes the process with
    SIGSEGV / SIGBUS (issue 19: 3 of 7 runs of a disk filling mid-recording, in the process driving the arms).
    So the first failed write is recorded here (`error`) and reported to HDF5 as done; from then on nothing more
    goes to the disk: writes are kept in memory (reads see them) until the file is closed, which therefore always
    succeeds, and `EpisodeFileBuilder` raises the recorded error at its next call. `discard()` does the same on
    purpose (abandoning a file: nothing more is written). What is kept in memory is bounded by what HDF5 still
    has to flush at close (chunk and metadata caches), because the builder refuses any further rows."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pos = 0
        self.error: OSError | None = None  # the first failed write (or truncate)
        self._discarding = False
        self._held: list[tuple[int, bytes]] = []  # (offset, bytes) written after a failure, in order
        self._held_end = 0

    # -- file-object protocol used by the driver ---------------------------------------------------------
    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = pos
        elif whence == os.SEEK_CUR:
            self._pos += pos
        else:
            self._pos = self._eof() + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        pos = self._pos
        if not self._holding:
            try:
                done = 0
                while done < len(view):
                    n = os.pwrite(self._fd, view[done:], pos + done)
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += n
            except OSError as e:
                self._fail(e)
        if self._holding:
            self._held.append((pos, view.tobytes()))
            self._held_end = max(self._held_end, pos + len(view))
        self._pos = pos + len(view)
        return len(view)

    def read(self, size: int = -1) -> bytes:
        pos = self._pos
        if size < 0:
            size = max(0, self._eof() - pos)
        buf = os.pread(self._fd, size, pos)
        if len(buf) < size or self._held:  # past the end reads as zeros (as HDF5's own sec2 driver does)
            out = bytearray(buf.ljust(size, b"\0"))
            for off, data in self._held:
                lo, hi = max(off, pos), min(off + len(data), pos + size)
                if lo < hi:
                    out[lo - pos:hi - pos] = data[lo - off:hi - off]
            buf = bytes(out)
        self._pos = pos + size
        return buf

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if not self._holding:
            try:
                os.ftruncate(self._fd, size)
            except OSError as e:
                self._fail(e)
        return size

    def flush(self) -> None:
        pass  # unbuffered: every write is a pwrite

    # -- ours ---------------------------------------------------------------------------------------------
    @property
    def _holding(self) -> bool:
        return self.error is not None or self._discarding

    def _fail(self, e: OSError) -> None:
        if self.error is None:
            self.error = e

    def _eof(self) -> int:
        return max(os.fstat(self._fd).st_size, self._held_end)

    def discard(self) -> None:
        """Write nothing more to the disk (the file is being abandoned)."""
        self._discarding = True

    def fsync(self) -> None:
        if not self._holding:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._held = []


class EpisodeFileBuilder:
    def __init__(self, path: Path, cameras: Sequence[str], n_joints: int = BIMANUAL_DOF):
        self.path = Path(path)
        self.cameras = list(cameras)
        self.n_joints = n_joints
        self._io = GuardedFile(self.path)
        try:
            self.f = h5py.File(self._io, "w")  # default libver: readable by old HDF5 in existing ALOHA tooling
        except BaseException:
            self._io.close()
            raise
        self._cap = 0
        self.n_steps = 0  # state rows received
        self.n_frames = [0] * len(self.cameras)  # image rows written per camera
        self._pending: list[StepRecord] = []
        self._fpending: list[list[tuple[int, int]]] = [[] for _ in self.cameras]  # (crc, len) per camera
        self._fwritten = [0] * len(self.cameras)
        self._width = [0] * len(self.cameras)
        self.phase_runs: list[tuple[int, str]] = []
        self.hw_errors: list[tuple[int, str]] = []
        # Every dataset stays open until the file is closed (`self._ds`): no dataset is closed - and flushed -
        # behind our back when a temporary h5py object is garbage-collected.
        self._ds: dict[str, h5py.Dataset] = {}
        try:
            f, nj = self.f, n_joints
            for key in fmt.STATE_KEYS:
                self._create(key, (0, nj), maxshape=(None, nj), dtype="f4", chunks=(256, nj))
            for key in (fmt.TIME_T, fmt.TIME_WALL):
                self._create(key, (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            for cam in self.cameras:
                f.require_group(f"{fmt.CAMERAS}/{cam}")
                for name, dt in (("t", "f8"), ("seq", "i8"), ("crc32", "u4")):
                    self._create(f"{fmt.CAMERAS}/{cam}/{name}", (0,), maxshape=(None,), dtype=dt, chunks=(1024,))
                self._create(f"{fmt.IMAGES}/{cam}", (0, 0), maxshape=(None, None), dtype="u1",
                             chunks=(1, fmt.IMAGE_CHUNK_BYTES), fillvalue=0)
            self._create(fmt.COMPRESS_LEN, (len(self.cameras), 0), maxshape=(len(self.cameras), None),
                         dtype="i4", chunks=(len(self.cameras), 1024))
            self._check()
        except BaseException:
            self.abort()
            raise

    def _create(self, key: str, shape, **kw) -> None:
        self._ds[key] = self.f.create_dataset(key, shape, **kw)

    def _check(self) -> None:
        """Raise the write error HDF5 was not told about (see GuardedFile); every later call raises it again."""
        e = self._io.error
        if e is not None:
            raise OSError(e.errno, f"{e.strerror or e} (writing {self.path.name})") from e

    @property
    def failed(self) -> OSError | None:
        """The write error that stopped this file (None while it is healthy)."""
        return self._io.error

    # -- rows ---------------------------------------------------------------------------------------------
    def _ensure_rows(self, n: int) -> None:
        if n <= self._cap:
            return
        self._cap = max(n, self._cap + _GROW)
        for cam in self.cameras:
            ds = self._ds[f"{fmt.IMAGES}/{cam}"]
            ds.resize((self._cap, ds.shape[1]))

    def append_step(self, rec: StepRecord) -> None:
        self._check()
        if rec.index != self.n_steps:
            raise ValueError(f"step {rec.index} out of order (expected {self.n_steps})")
        self._pending.append(rec)
        self.n_steps += 1
        if rec.phase and (not self.phase_runs or self.phase_runs[-1][1] != rec.phase):
            self.phase_runs.append((rec.index, rec.phase))
        self.hw_errors.extend((rec.index, m) for m in rec.hw_errors)

    def append_frame(self, cam_index: int, step: int, jpeg: bytes) -> None:
        self._check()
        if step != self.n_frames[cam_index]:
            raise ValueError(f"frame for step {step} out of order (expected {self.n_frames[cam_index]})")
        ds = self._ds[f"{fmt.IMAGES}/{self.cameras[cam_index]}"]
        self._ensure_rows(step + 1)
        n = len(jpeg)
        if n > ds.shape[1]:
            ds.resize((ds.shape[0], -(-n // fmt.IMAGE_CHUNK_BYTES) * fmt.IMAGE_CHUNK_BYTES))
        self._width[cam_index] = max(self._width[cam_index], n)
        if n:
            ds[step, :n] = np.frombuffer(jpeg, dtype=np.uint8)
        self._fpending[cam_index].append((zlib.crc32(jpeg), n))
        self.n_frames[cam_index] += 1
        self._check()

    def flush(self, sync: bool = False) -> None:
        """Write buffered rows; with sync, also flush HDF5 and fsync so the final close has little left to do."""
        self._check()
        if self._pending:
            recs, self._pending = self._pending, []
            start, end = recs[0].index, recs[-1].index + 1
            state = np.stack([r.state for r in recs])  # (k, 5, nj)
            for i, key in enumerate(fmt.STATE_KEYS):
                ds = self._ds[key]
                ds.resize((end, self.n_joints))
                ds[start:end] = state[:, i]
            for key, vals in ((fmt.TIME_T, [r.t for r in recs]), (fmt.TIME_WALL, [r.t_wall for r in recs])):
                ds = self._ds[key]
                ds.resize((end,))
                ds[start:end] = vals
            cam_t = np.stack([r.cam_t for r in recs])
            cam_seq = np.stack([r.cam_seq for r in recs])
            for c, cam in enumerate(self.cameras):
                for name, vals in (("t", cam_t[:, c]), ("seq", cam_seq[:, c])):
                    ds = self._ds[f"{fmt.CAMERAS}/{cam}/{name}"]
                    ds.resize((end,))
                    ds[start:end] = vals
        for c, cam in enumerate(self.cameras):
            rows = self._fpending[c]
            if not rows:
                continue
            self._fpending[c] = []
            start = self._fwritten[c]
            end = start + len(rows)
            crc = self._ds[f"{fmt.CAMERAS}/{cam}/crc32"]
            crc.resize((end,))
            crc[start:end] = [r[0] for r in rows]
            cl = self._ds[fmt.COMPRESS_LEN]
            if cl.shape[1] < end:
                cl.resize((len(self.cameras), max(end, cl.shape[1] + 1024)))
            cl[c, start:end] = [r[1] for r in rows]
            self._fwritten[c] = end
        if sync:
            self.f.flush()
            self._check()
            self._io.fsync()
        self._check()

    @property
    def complete_steps(self) -> int:
        """Steps for which the state and every camera's frame arrived."""
        return min([self.n_steps, *self.n_frames]) if self.cameras else self.n_steps

    # -- finishing ----------------------------------------------------------------------------------------
    def quality_input(self, control_hz: float | None, writer_dropped: Sequence[int] | None = None,
                      timestamps_measured: bool = True, sim: bool = False, trial: bool = False) -> QualityInput:
        self.flush()
        n = self.complete_steps
        d = self._ds
        tracks = {}
        for c, cam in enumerate(self.cameras):
            g = f"{fmt.CAMERAS}/{cam}"
            tracks[cam] = CameraTrack(d[f"{g}/t"][:n], d[f"{g}/seq"][:n], d[f"{g}/crc32"][:n],
                                      int(writer_dropped[c]) if writer_dropped else 0)
        qi = QualityInput(
            t=d[fmt.TIME_T][:n], qpos=d[fmt.QPOS][:n], action=d[fmt.ACTION][:n], cameras=tracks,
            hw_errors=[(s, m) for s, m in self.hw_errors if s < n], control_hz=control_hz,
            timestamps_measured=timestamps_measured, t_wall=d[fmt.TIME_WALL][:n], sim=sim, trial=trial,
            command=d[fmt.COMMAND][:n] if fmt.COMMAND in d else None)
        self._check()
        return qi

    def finish(self, attrs: dict) -> int:
        """Trim every dataset to the complete steps, write the root attributes, close and fsync.
        Returns the number of steps."""
        self.flush()
        n = self.complete_steps
        f, d = self.f, self._ds
        for key in fmt.STATE_KEYS:
            d[key].resize((n, self.n_joints))
        for key in (fmt.TIME_T, fmt.TIME_WALL):
            d[key].resize((n,))
        for c, cam in enumerate(self.cameras):
            for name in ("t", "seq", "crc32"):
                d[f"{fmt.CAMERAS}/{cam}/{name}"].resize((n,))
            d[f"{fmt.IMAGES}/{cam}"].resize((n, self._width[c]))
        d[fmt.COMPRESS_LEN].resize((len(self.cameras), n))
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
        self._check()
        self._close_file()
        self._check()
        fsync_path(self.path)
        return n

    def _close_file(self) -> None:
        """Close the datasets, then the file, then its descriptor (idempotent). HDF5 never sees a failed write
        (GuardedFile), so this cannot leave a half-closed identifier behind."""
        self._ds.clear()  # drop our references first: h5py closes every object of the file with it
        try:
            if self.f.id.valid:
                self.f.close()
        except Exception:  # noqa: BLE001 - not a write error (those never reach HDF5); keep going
            log.exception("closing %s failed", self.path)
        finally:
            self._io.close()

    def close(self) -> None:
        """Close and keep what was written (also after a failed write: then the file is incomplete)."""
        self._close_file()

    def abort(self) -> None:
        """Close without writing anything more to the disk: for a file that is thrown away (after a failed
        write, a discarded recording or a failed recovery). Always succeeds; delete the file afterwards."""
        self._io.discard()
        self._close_file()
