"""Append-only episode journal: the crash-safe copy of an episode while it is being recorded.

HDF5 files killed mid-write can be unreadable, so the streaming writer appends every step and every JPEG
frame to this journal as well (CRC-checked records, flushed to the OS several times a second and fsynced
every second). After a crash the journal is read up to its last intact record and converted into a normal
episode file (recorder.recovery). A truncated or corrupt tail is simply where the data ends.

Record: u32 payload length, u32 CRC-32 of (type byte + payload), u8 type, payload.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

MAGIC = b"AWBJRNL1"
_REC = struct.Struct("<IIB")
_STEP = struct.Struct("<Iddd")  # index, t, t_wall, period
_CAM = struct.Struct("<dq")  # capture t, seq
_FRAME = struct.Struct("<IBB")  # step, camera index, flags

HEADER, STEP, FRAME, MARK, END = 1, 2, 3, 4, 5
FLAG_REPEAT = 1  # same device frame as the previous step: no bytes, reuse the previous JPEG
FLAG_WRITER_DROP = 2  # the writer was behind and reused the previous JPEG (counted as a dropped frame)
MAX_RECORD = 64 << 20


@dataclass
class StepRecord:
    index: int
    t: float
    t_wall: float
    period: float
    state: np.ndarray  # (5, n_joints) float32: qpos, qvel, effort, action, command
    cam_t: np.ndarray  # (n_cams,) float64
    cam_seq: np.ndarray  # (n_cams,) int64
    phase: str = ""
    hw_errors: list[str] = field(default_factory=list)


def encode_step(rec: StepRecord) -> bytes:
    phase = rec.phase.encode("utf-8")
    hw = json.dumps(rec.hw_errors).encode("utf-8") if rec.hw_errors else b""
    cams = b"".join(_CAM.pack(float(t), int(s)) for t, s in zip(rec.cam_t, rec.cam_seq))
    return b"".join((
        _STEP.pack(rec.index, rec.t, rec.t_wall, rec.period),
        np.ascontiguousarray(rec.state, dtype="<f4").tobytes(),
        cams,
        struct.pack("<H", len(phase)), phase,
        struct.pack("<I", len(hw)), hw,
    ))


def decode_step(buf: bytes, n_joints: int, n_cams: int) -> StepRecord:
    index, t, t_wall, period = _STEP.unpack_from(buf, 0)
    off = _STEP.size
    nstate = 5 * n_joints * 4
    state = np.frombuffer(buf, dtype="<f4", count=5 * n_joints, offset=off).reshape(5, n_joints).copy()
    off += nstate
    cam_t = np.empty(n_cams, np.float64)
    cam_seq = np.empty(n_cams, np.int64)
    for i in range(n_cams):
        cam_t[i], cam_seq[i] = _CAM.unpack_from(buf, off)
        off += _CAM.size
    (plen,) = struct.unpack_from("<H", buf, off)
    off += 2
    phase = buf[off:off + plen].decode("utf-8")
    off += plen
    (hlen,) = struct.unpack_from("<I", buf, off)
    off += 4
    hw = json.loads(buf[off:off + hlen]) if hlen else []
    return StepRecord(index, t, t_wall, period, state, cam_t, cam_seq, phase, hw)


def encode_frame(step: int, cam_index: int, flags: int, jpeg: bytes) -> bytes:
    return _FRAME.pack(step, cam_index, flags) + jpeg


def decode_frame(buf: bytes) -> tuple[int, int, int, bytes]:
    step, cam, flags = _FRAME.unpack_from(buf, 0)
    return step, cam, flags, buf[_FRAME.size:]


class JournalWriter:
    """Appends records to a buffered file; `flush()` hands them to the OS (enough to survive SIGKILL),
    `sync()` also fsyncs (enough to survive power loss)."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self._f: BinaryIO = open(path, "xb", buffering=1 << 20)
        try:
            self._f.write(MAGIC)
            self.write(HEADER, json.dumps(header).encode("utf-8"))
            self.sync()
        except BaseException:  # e.g. a full disk: the caller removes the file
            self.abandon()
            raise

    def fileno(self) -> int:
        return self._f.fileno()

    def write(self, rtype: int, payload: bytes) -> None:
        crc = zlib.crc32(payload, zlib.crc32(bytes((rtype,))))
        self._f.write(_REC.pack(len(payload), crc, rtype))
        self._f.write(payload)

    def flush(self) -> None:
        self._f.flush()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            try:
                self.sync()
            finally:
                self._f.close()

    def abandon(self) -> None:
        """Close without flushing what could not be written (disk full); the file keeps its intact prefix."""
        try:
            self._f.close()
        except OSError:
            pass


class JournalCorrupt(ValueError):
    """The journal's header is unreadable: nothing in it can be trusted."""


def read_journal(path: Path) -> tuple[dict, Iterator[tuple[int, bytes]]]:
    """Header and an iterator over intact (type, payload) records; stops silently at a torn tail."""
    f = open(path, "rb")
    try:
        if f.read(len(MAGIC)) != MAGIC:
            raise JournalCorrupt(f"{path}: not an episode journal (bad magic)")
        first = _read_record(f)
        if first is None or first[0] != HEADER:
            raise JournalCorrupt(f"{path}: journal header is missing or damaged")
        header = json.loads(first[1])
    except BaseException:
        f.close()
        raise

    def records() -> Iterator[tuple[int, bytes]]:
        with f:
            while (rec := _read_record(f)) is not None:
                yield rec

    return header, records()


def _read_record(f: BinaryIO) -> tuple[int, bytes] | None:
    head = f.read(_REC.size)
    if len(head) < _REC.size:
        return None
    length, crc, rtype = _REC.unpack(head)
    if length > MAX_RECORD:
        return None
    payload = f.read(length)
    if len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) != crc:
        return None
    return rtype, payload
