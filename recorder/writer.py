"""Streaming episode writer: JPEG encoding and disk I/O happen while recording, off the control thread.

`EpisodeWriter.append(tick)` (called once per control tick, in the control thread) only copies the state
(~100 floats) and hands new camera images to a small encoder pool (cv2.imencode releases the GIL). One
writer thread appends every step and frame, in order, to

- a journal (`.incoming/<name>.journal`), flushed to the OS every 0.25 s and fsynced every second: after a
  SIGKILL at most the last ~0.5 s is missing and recovery rebuilds the episode from it;
- the episode file itself (`.incoming/<name>.partial.hdf5`), so stopping only has to write the last rows,
  the quality report and the attributes, fsync, and rename it into the dataset (well under a second).

Memory is bounded: raw images wait only for an encoder slot; when the encoders or the disk fall behind,
the previous frame is reused and counted as a writer-dropped frame instead of queueing without limit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import cv2
import numpy as np

from drivers.arm import BIMANUAL_DOF
from recorder import format as fmt
from recorder import journal as jr
from recorder.durable import fsync_path
# the finishing steps shared with recovery and import
from recorder.finalize import INCOMING, RecorderError, SavedEpisode, check_extra_attrs, finalize_file
from recorder.h5file import EpisodeFileBuilder
from recorder.quality import QualityThresholds
from recorder.recovery import recover_journal
from recorder.rig_info import RigInfo, rig_info_from_toml

log = logging.getLogger(__name__)


class DiskFullError(RecorderError):
    """The disk is full (or nearly, below the writer's reserve): recording stopped, what was written is kept
    (`saved`, or the journal the message names). Never a crash: see recorder.h5file.GuardedFile."""


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


# the free space a writer keeps: below it recording stops cleanly (the episode finished while there is room)
MIN_FREE_BYTES = 256 << 20


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


class FrameLike(Protocol):
    image: np.ndarray
    t: float
    seq: int


class TickLike(Protocol):
    """The fields of workbench.teleop.Tick the recorder uses."""

    index: int
    t: float
    t_wall: float
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray
    command: np.ndarray
    frames: Mapping[str, FrameLike]
    phase: str | None
    hw_errors: list[str]
    period: float


def encode_jpeg(image: np.ndarray, quality: int = fmt.JPEG_QUALITY) -> bytes:
    """ALOHA convention: the RGB array is handed to cv2 as is, so cv2.imdecode gives back RGB."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def _rig_info(info: RigInfo | None, rig_config: str, cameras: list[str], control_hz: float | None,
              name: str) -> dict[str, Any] | None:
    """The episode's rig facts (recorder.rig_info): as given, else read from the rig file text, with the cameras
    and rate this episode records; None without either."""
    if info is None and rig_config:
        try:
            info = rig_info_from_toml(rig_config)
        except ValueError as e:
            log.warning("%s: no rig info from its rig file (%s)", name, e)
            return None
        info = dataclasses.replace(info, cameras=tuple(cameras),
                                   control_hz=float(control_hz) if control_hz else info.control_hz)
    return None if info is None else info.to_json()


_STOP = object()


@dataclass
class _StepItem:
    rec: jr.StepRecord
    jobs: list  # per camera: Future (new frame), jr.FLAG_REPEAT or jr.FLAG_WRITER_DROP


class EpisodeWriter:
    """Records one episode into `dataset_dir` as `<name>.hdf5`. Create through DatasetStore.new_episode."""

    def __init__(self, dataset_dir: Path, name: str, cameras: Sequence[str], *, task: str = "",
                 rig_config: str = "", sim: bool = False, sim_seed: int | None = None, control_hz: float | None = None,
                 thresholds: QualityThresholds | None = None, n_joints: int = BIMANUAL_DOF,
                 jpeg_quality: int = fmt.JPEG_QUALITY, encode_threads: int = 2, max_inflight_images: int = 200,
                 max_queued_steps: int = 500, flush_s: float = 0.25, sync_s: float = 1.0,
                 min_free_bytes: int = MIN_FREE_BYTES, rig_info: RigInfo | None = None,
                 on_saved: Callable[[SavedEpisode], None] | None = None):
        self.dir = Path(dataset_dir)
        self.name = name
        self.cameras = list(cameras)
        self.final_path = self.dir / f"{name}{fmt.EPISODE_SUFFIX}"
        inc = self.dir / INCOMING
        self.journal_path = inc / f"{name}.journal"
        self.partial_path = inc / f"{name}.partial{fmt.EPISODE_SUFFIX}"
        self.header = {
            "name": name, "format_version": fmt.FORMAT_VERSION, "cameras": self.cameras, "n_joints": n_joints,
            "task": task, "rig_config": rig_config, "sim": sim, "sim_seed": sim_seed, "control_hz": control_hz,
            "thresholds": asdict(thresholds or QualityThresholds()), "jpeg_quality": jpeg_quality,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "outcome": "unlabeled",
            "notes": "",
            "rig_info": _rig_info(rig_info, rig_config, self.cameras, control_hz, name),
        }
        self._jpeg_quality = jpeg_quality
        self._max_inflight = max_inflight_images
        self._max_queued = max_queued_steps
        self._flush_s, self._sync_s = flush_s, sync_s
        self._min_free = min_free_bytes
        self._low_space: str | None = None  # set by the writer thread when free space drops below the reserve
        self._on_saved = on_saved
        self._start_files(n_joints)
        self._pool = ThreadPoolExecutor(max_workers=encode_threads, thread_name_prefix=f"jpeg-{name}")
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._inflight = 0
        self._last_seq: dict[str, int] = {}
        self._last_img_id: dict[str, int] = {}
        self.steps = 0
        self.writer_dropped = [0] * len(self.cameras)
        self._marks: list[tuple[int, str]] = []
        self.error: RecorderError | None = None
        self._failing = False  # a write failed: recording has stopped, _salvage is keeping what was written
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)
        self._thread.start()

    def _start_files(self, n_joints: int) -> None:
        """The journal and the partial episode file; on a full disk a DiskFullError and nothing left behind. (Below
        the reserve but not full, recording starts and stops at the writer's first space check, keeping its steps.)"""
        journal = None
        try:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            journal = jr.JournalWriter(self.journal_path, self.header)
            fcntl.flock(journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # "live": recovery leaves it alone
            self._builder = EpisodeFileBuilder(self.partial_path, self.cameras, n_joints)
        except OSError as e:
            if journal is not None:
                journal.abandon()
            if not isinstance(e, FileExistsError):  # never remove the files of another recording
                for p in (self.partial_path, self.journal_path):
                    with contextlib.suppress(OSError):
                        p.unlink(missing_ok=True)
            if _is_disk_full(e):
                raise DiskFullError(f"{self.name}: disk full; not recording. Free some space in {self.dir} (or "
                                    f"record into another dataset folder).") from e
            raise RecorderError(f"{self.name}: cannot record into {self.dir} ({e.strerror or e}); not recording.") \
                from e
        self._journal = journal

    # -- control thread -----------------------------------------------------------------------------------
    def append(self, tick: TickLike) -> None:
        """Queue one control tick; cheap (tens of microseconds). Raises RecorderError after a failure."""
        if self.error is not None:
            raise self.error
        if self._closed:
            raise RecorderError(f"{self.name}: append after stop")
        if self._failing:
            return  # the writer thread is saving what it has after a failure; its error comes with the next append
        if self._low_space is not None:
            self._stop_for_space()
        step = self.steps
        state = np.array([tick.qpos, tick.qvel, tick.effort, tick.action, tick.command], dtype=np.float32)
        ncam = len(self.cameras)
        cam_t = np.empty(ncam, np.float64)
        cam_seq = np.empty(ncam, np.int64)
        jobs: list = []
        behind = self._q.qsize() > self._max_queued
        for c, cam in enumerate(self.cameras):
            fr = tick.frames.get(cam)
            if fr is None:
                if step == 0:
                    raise RecorderError(f"{self.name}: camera {cam} delivered no frame on the first tick")
                cam_t[c], cam_seq[c] = float("nan"), self._last_seq[cam]
                jobs.append(jr.FLAG_WRITER_DROP)
                continue
            cam_t[c], cam_seq[c] = fr.t, fr.seq
            if step and fr.seq == self._last_seq[cam] and id(fr.image) == self._last_img_id[cam]:
                jobs.append(jr.FLAG_REPEAT)
            elif step and (behind or self._inflight >= self._max_inflight):
                jobs.append(jr.FLAG_WRITER_DROP)
            else:
                with self._lock:
                    self._inflight += 1
                fut = self._pool.submit(encode_jpeg, fr.image, self._jpeg_quality)
                fut.add_done_callback(self._encoded)
                jobs.append(fut)
            self._last_seq[cam] = fr.seq
            self._last_img_id[cam] = id(fr.image)
        rec = jr.StepRecord(step, float(tick.t), float(tick.t_wall), float(tick.period), state, cam_t, cam_seq,
                            tick.phase or "", list(tick.hw_errors))
        self._q.put(_StepItem(rec, jobs))
        self.steps += 1

    def _stop_for_space(self) -> None:
        """The disk is nearly full: finish the episode properly while there is still room, then refuse more."""
        why = self._low_space
        try:
            saved = self.stop()
        except RecorderError:
            raise
        self.error = DiskFullError(f"{self.name}: disk nearly full ({why}); recording stopped. Kept {saved.steps} "
                                   f"steps ({saved.duration_s:.1f} s) as {saved.path}.", saved)
        raise self.error

    def _check_space(self) -> None:
        st = os.statvfs(self.dir)
        free = st.f_bavail * st.f_frsize
        if free < self._min_free:
            self._low_space = f"{free / 1e6:.1f} MB free, reserve {self._min_free / 1e6:.1f} MB"

    def _encoded(self, _fut: Future) -> None:
        with self._lock:
            self._inflight -= 1

    def mark_segment(self, label: str) -> int:
        """Segment boundary before the next step: closes the open segment and opens `label` ('' = close only)."""
        step = self.steps
        self._q.put(("mark", step, label))
        return step

    def set_outcome(self, outcome: str, notes: str | None = None) -> None:
        self.header["outcome"] = fmt.check_outcome(outcome)
        if notes is not None:
            self.header["notes"] = notes
        self._q.put(("meta", {"outcome": outcome, "notes": self.header["notes"]}))

    def set_extra_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Extra root attributes for the episode file (e.g. recorder.format.TRIAL_ATTR), merged with earlier
        calls and written when the episode is finished. Values: str / bool / int / float, or anything
        JSON-serialisable (stored as its JSON text); names the recorder uses itself are refused (ValueError).
        They go into the journal as well, so an episode recovered after a crash keeps the attributes set
        before it (the last call's, if the crash came after that call's journal record reached the disk)."""
        if self._closed:
            raise RecorderError(f"{self.name}: set_extra_attrs after stop")
        check_extra_attrs(attrs)
        merged = {**self.header.get("extra_attrs", {}), **dict(attrs)}
        self.header["extra_attrs"] = merged
        self._q.put(("meta", {"extra_attrs": merged}))

    # -- stop / discard -----------------------------------------------------------------------------------
    def stop(self) -> SavedEpisode:
        """Finish writing and publish the episode; returns it with its quality report."""
        t0 = time.monotonic()
        self._shutdown()
        if self.error is not None:
            raise self.error
        try:
            saved = finalize_file(self._builder, self.final_path, self.header, self._marks, self.writer_dropped)
        except OSError as e:
            self._salvage(e)
            raise self.error from e  # type: ignore[misc]
        self._journal_done()
        saved.save_latency_s = time.monotonic() - t0
        self._notify_saved(saved)
        return saved

    def _notify_saved(self, saved: SavedEpisode) -> None:
        if self._on_saved:
            try:
                self._on_saved(saved)
            except Exception:  # noqa: BLE001 - the index is a rebuildable cache; the episode is safe
                log.exception("index update after saving %s failed", saved.name)

    def discard(self) -> None:
        """Re-record: throw the current episode away."""
        self._shutdown()
        self._builder.abort()
        self._journal.abandon()
        for p in (self.partial_path, self.journal_path):
            p.unlink(missing_ok=True)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _journal_done(self) -> None:
        self._journal.abandon()
        self.journal_path.unlink(missing_ok=True)
        fsync_path(self.journal_path.parent)

    # -- writer thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        last = [b""] * len(self.cameras)
        t_flush = t_sync = time.monotonic()
        try:
            while True:
                try:
                    item = self._q.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if isinstance(item, _StepItem):
                    self._write_step(item, last)
                elif isinstance(item, tuple):
                    kind, *rest = item
                    if kind == "mark":
                        self._marks.append((rest[0], rest[1]))
                        self._journal.write(jr.MARK, json.dumps({"step": rest[0], "label": rest[1]}).encode())
                    elif kind == "meta":
                        self._journal.write(jr.MARK, json.dumps({"meta": rest[0]}).encode())
                now = time.monotonic()
                if now - t_flush >= self._flush_s:
                    self._journal.flush()
                    self._check_space()
                    t_flush = now
                if now - t_sync >= self._sync_s:
                    self._journal.sync()
                    self._builder.flush(sync=True)
                    t_sync = now
            self._journal.write(jr.END, b"{}")
            self._journal.sync()
        except OSError as e:
            self._salvage(e)
        except BaseException as e:  # noqa: BLE001 - any writer failure must reach the control thread
            log.exception("episode writer failed")
            self._salvage(e)

    def _write_step(self, item: _StepItem, last: list[bytes]) -> None:
        rec = item.rec
        self._journal.write(jr.STEP, jr.encode_step(rec))
        self._builder.append_step(rec)
        for c, job in enumerate(item.jobs):
            if isinstance(job, Future):
                jpeg, flags = job.result(), 0
            else:
                jpeg, flags = last[c], job
                if job == jr.FLAG_WRITER_DROP:
                    self.writer_dropped[c] += 1
            self._journal.write(jr.FRAME, jr.encode_frame(rec.index, c, flags, jpeg if flags == 0 else b""))
            self._builder.append_frame(c, rec.index, jpeg)
            last[c] = jpeg

    def _salvage(self, exc: BaseException) -> None:
        """Stop after a failure (typically a full disk) and keep what reached the journal."""
        if self.error is not None:
            return
        self._failing = True
        self._journal.abandon()
        # The partial file is dropped (the journal is the truth): abort() writes nothing more and cannot fail,
        # because HDF5 never saw the failed write (recorder.h5file.GuardedFile); the unlink frees its space.
        self._builder.abort()
        self.partial_path.unlink(missing_ok=True)
        disk_full = _is_disk_full(exc)
        what = "disk full" if disk_full else f"write failed ({exc})"
        try:
            saved = recover_journal(self.journal_path, self.final_path)
        except Exception as e2:  # noqa: BLE001
            msg = (f"{self.name}: {what}; recording stopped. The episode so far is kept in {self.journal_path}; "
                   f"free some space, then run `workbench episodes recover {self.dir}` ({e2}).")
            saved = None
        else:
            msg = (f"{self.name}: {what}; recording stopped. Kept {saved.steps} steps ({saved.duration_s:.1f} s) "
                   f"as {saved.path}.")
            try:
                self._journal_done()  # published: the journal is no longer needed (and its space is wanted)
            except OSError:
                log.warning("%s: could not remove %s (recover removes it later)", self.name, self.journal_path)
            self._notify_saved(saved)
        cls = DiskFullError if disk_full else RecorderError
        self.error = cls(msg, saved)
        log.error(msg)
