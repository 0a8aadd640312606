"""Dataset store: a folder of episode files plus an index, safe for a GUI and a CLI at the same time.

Layout: `<root>/episode_<i>.hdf5` (+ `.labels.json` sidecars after edits), `index.json` (a cache derivable
from the files, refreshed when a file's mtime changes), `.trash/` (soft-deleted episodes), `.incoming/`
(recordings in progress and their journals), `.quarantine/` (unrecoverable leftovers), `.lock`.
Every mutation holds an exclusive fcntl lock on `.lock`; files are replaced atomically (tmp, fsync, rename).

Reading writes nothing: listing, showing, reading, exporting and training work from a read-only mount or a full
disk. A reader takes a shared lock on an existing `.lock` (never creating one), and the index is only refreshed
when it can be written - otherwise the listing is read from the files, without a word. A mutation of a folder
that cannot be written raises StoreError saying why (read-only, full disk, no permission).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

from recorder import format as fmt
from recorder.durable import fsync_path
from recorder.finalize import INCOMING, SavedEpisode
from recorder.format import Segment
from recorder.integrity import unreadable_reason
from recorder.reader import EpisodeInfo, EpisodeReader, labels_path, read_info
from recorder.recovery import QUARANTINE, RecoveryResult, quarantine, recover_dataset
from recorder.segments import canonical, validate_segments
from recorder.writer import MIN_FREE_BYTES, EpisodeWriter

TRASH = ".trash"
INDEX = "index.json"
INDEX_VERSION = 2  # 2: damaged episodes are indexed too (field `damaged`)
READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError)
log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A dataset problem the operator can act on; the message says what and where."""


@dataclass
class EpisodeSummary:
    name: str
    index: int
    steps: int
    duration_s: float
    task: str
    outcome: str
    quality: str  # pass / warn / fail / n/a
    segments: int
    cameras: list[str]
    created: str
    source: str
    recovered: bool
    deleted: bool
    size_bytes: int
    mtime_ns: int
    labels_mtime_ns: int
    damaged: str = ""  # why the episode cannot be used ("" = it can); damaged episodes are skipped by export

    @classmethod
    def of(cls, info: EpisodeInfo, deleted: bool) -> "EpisodeSummary":
        st = info.path.stat()
        side = labels_path(info.path)
        return cls(
            name=info.name, index=_index_or(info.name), steps=info.steps,
            duration_s=round(info.duration_s, 3) if info.duration_s == info.duration_s else -1.0,
            task=info.task, outcome=info.outcome, quality=info.quality.status if info.quality else "n/a",
            segments=len(info.segments), cameras=info.cameras, created=info.created, source=info.source,
            recovered=info.recovered, deleted=deleted, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
            labels_mtime_ns=side.stat().st_mtime_ns if side.exists() else 0, damaged="; ".join(info.problems))

    @classmethod
    def unreadable(cls, path: Path, reason: str, deleted: bool) -> "EpisodeSummary":
        st = path.stat()
        side = labels_path(path)
        return cls(name=path.stem, index=_index_or(path.stem), steps=0, duration_s=-1.0, task="", outcome="unlabeled",
                   quality="n/a", segments=0, cameras=[], created="", source="", recovered=False, deleted=deleted,
                   size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
                   labels_mtime_ns=side.stat().st_mtime_ns if side.exists() else 0, damaged=reason)

    @property
    def file_name(self) -> str:
        return f"{self.name}{fmt.EPISODE_SUFFIX}"


def _index_or(name: str, default: int = -1) -> int:
    i = fmt.episode_index(name)
    return default if i is None else i


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (tmp, fsync, rename); a failure (full disk) leaves `path` as it was, no tmp."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def unwritable(root: Path, e: OSError, doing: str = "change") -> str:
    """Why a dataset folder cannot be written, for the operator."""
    why = {errno.EROFS: "it is on a read-only file system", errno.ENOSPC: "the disk is full",
           errno.EDQUOT: "the disk quota is used up", errno.EACCES: "no write permission",
           errno.EPERM: "no write permission"}.get(e.errno, e.strerror or str(e))
    return f"cannot {doing} the dataset {root}: {why}. Listing, reading and exporting it still work."


class DatasetStore:
    """A dataset folder. Opening one writes nothing: the folder (and its `.lock`) is created by the first
    recording or edit (`create=True`), so merely showing a default dataset leaves no trace on disk."""

    def __init__(self, root: Path | str, create: bool = True):
        self.root = Path(root).expanduser()
        self.create = create
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is a file, not a dataset folder: choose a folder (a new one is created "
                             f"when you record)")
        if not create and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a dataset folder (it does not exist)")
        self.trash = self.root / TRASH

    def _ensure_root(self) -> None:
        if self.root.is_dir():
            return
        if not self.create:
            raise StoreError(f"{self.root} is not a dataset folder (it does not exist)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the dataset folder {self.root}: {e.strerror or e}") from e

    # -- locking ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The exclusive lock of a mutation (creates the folder and `.lock` if needed). A folder that cannot be
        written raises StoreError saying why."""
        self._ensure_root()
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(unwritable(self.root, e)) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A shared lock while reading (no mutation half-way through a listing), on an existing `.lock` opened
        read-only: a reader never creates one, so it works on a read-only mount or a full disk. Without a
        `.lock` (a folder this workbench never wrote) there is no writer to wait for."""
        try:
            fd = os.open(self.root / ".lock", os.O_RDONLY)
        except OSError:
            fd = -1
        try:
            if fd >= 0:
                with contextlib.suppress(OSError):  # a file system without flock: read unlocked
                    fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            if fd >= 0:
                os.close(fd)

    # -- recording ----------------------------------------------------------------------------------------
    def next_index(self) -> int:
        used = [-1]
        for d in (self.root, self.trash, self.root / INCOMING, self.root / QUARANTINE):
            if d.is_dir():
                for p in d.iterdir():
                    i = fmt.episode_index(p.name.split(".")[0])
                    if i is not None:
                        used.append(i)
        return max(used) + 1

    def new_episode(self, cameras: list[str], **writer_kwargs) -> EpisodeWriter:
        """Allocate the next episode number (never reused, even after deletes) and start its writer."""
        with self.locked():
            name = fmt.episode_name(self.next_index())
            return EpisodeWriter(self.root, name, cameras, on_saved=self._on_saved, **writer_kwargs)

    def free_bytes(self) -> int:
        """Free space of the dataset's disk (of its nearest existing folder: the dataset is made on first use)."""
        where = self.root
        while not where.exists() and where.parent != where:
            where = where.parent
        st = os.statvfs(where)
        return st.f_bavail * st.f_frsize

    def bytes_per_step(self, cameras: int, default_frame_bytes: int = 40_000) -> float:
        """What a step of this dataset takes on disk: measured on its episodes, else `cameras` JPEG frames of
        ALOHA's size (~10-40 kB each at quality 50) and the joint rows."""
        eps = [e for e in self._load_index().values() if e.steps > 0 and e.size_bytes > 0]
        if eps:
            return sum(e.size_bytes for e in eps) / sum(e.steps for e in eps)
        return cameras * default_frame_bytes + 1_000

    def require_space(self, steps: int, cameras: int, what: str = "an episode") -> None:
        """Refuse to start `what` (before anything moves) unless the disk holds its `steps` plus the writer's
        reserve: a recording stopped by a full disk mid-motion is the thing to avoid."""
        need = int(steps * self.bytes_per_step(cameras)) + MIN_FREE_BYTES
        try:
            free = self.free_bytes()
        except OSError as e:
            raise StoreError(unwritable(self.root, e, "record into")) from e
        if free < need:
            raise StoreError(f"{self.root} has {free / 1e6:.0f} MB free; {what} needs "
                             f"~{(need - MIN_FREE_BYTES) / 1e6:.0f} MB plus the recorder's {MIN_FREE_BYTES >> 20} MiB "
                             "reserve. Free space on that disk or choose another dataset folder; nothing was started.")

    def _on_saved(self, saved: SavedEpisode) -> None:
        summary = EpisodeSummary.of(read_info(saved.path), deleted=False)
        self._update_index(lambda idx: {**idx, saved.name: summary})

    def recover(self) -> RecoveryResult:
        """Turn crashed recordings into episodes (or quarantine them) and refresh the index."""
        try:
            res = recover_dataset(self.root)
        except OSError as e:
            raise StoreError(unwritable(self.root, e, "recover episodes into")) from e
        if res.recovered or res.quarantined:
            self.list(include_deleted=True)
        return res

    # -- index --------------------------------------------------------------------------------------------
    def _load_index(self) -> dict[str, EpisodeSummary]:
        try:
            d = json.loads((self.root / INDEX).read_text())
            if d.get("version") != INDEX_VERSION:
                return {}
            names = {f.name for f in fields(EpisodeSummary)}
            return {e["name"]: EpisodeSummary(**{k: v for k, v in e.items() if k in names}) for e in d["episodes"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _update_index(self, update: Callable[[dict[str, EpisodeSummary]], dict[str, EpisodeSummary]]) -> None:
        """Rewrite the index cache under the lock, if the folder can be written: on a read-only mount, a full disk
        or without permission it is left as it is (listings then read the changed files again), without a word."""
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            log.debug("%s: index cache not updated (%s)", self.root, e)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._save_index(update(self._load_index()))
        except OSError as e:
            log.debug("%s: index cache not updated (%s)", self.root, e)
        finally:
            os.close(fd)

    def _save_index(self, idx: dict[str, EpisodeSummary]) -> None:
        eps = sorted(idx.values(), key=lambda e: (e.index, e.name))
        atomic_write(self.root / INDEX, json.dumps({"version": INDEX_VERSION, "episodes": [asdict(e) for e in eps]},
                                                    indent=1).encode())

    def _files(self) -> dict[str, tuple[Path, bool]]:
        out: dict[str, tuple[Path, bool]] = {}
        for d, deleted in ((self.root, False), (self.trash, True)):
            if d.is_dir():
                for p in d.glob(f"*{fmt.EPISODE_SUFFIX}"):
                    out[p.stem] = (p, deleted)
        return out

    def list(self, include_deleted: bool = False, include_damaged: bool = False) -> list[EpisodeSummary]:
        """Episodes from the index, re-reading only files that changed since it was written. Damaged episodes
        (unreadable, or missing data: `EpisodeSummary.damaged` says what) are left out unless asked for."""
        if not self.root.is_dir():
            return []  # nothing recorded yet; do not create the folder just to look at it
        with self._reading():  # reading takes no write lock and writes nothing (read-only mounts, full disks)
            idx = self._load_index()
            files = self._files()
            fresh: dict[str, EpisodeSummary] = {}
            changed = set(idx) != set(files)
            for name, (path, deleted) in files.items():
                e = idx.get(name)
                side = labels_path(path)
                side_m = side.stat().st_mtime_ns if side.exists() else 0
                if e is None or e.deleted != deleted or e.mtime_ns != path.stat().st_mtime_ns \
                        or e.labels_mtime_ns != side_m:
                    try:
                        e = EpisodeSummary.of(read_info(path), deleted)
                    except READ_ERRORS as err:
                        e = EpisodeSummary.unreadable(path, unreadable_reason(path, err), deleted)
                    changed = True
                fresh[name] = e
        if changed:  # the index is a cache: refreshed when the folder can be written, else read without it
            self._update_index(lambda _old: fresh)
        eps = sorted(fresh.values(), key=lambda e: (e.index, e.name))
        return [e for e in eps if (include_deleted or not e.deleted) and (include_damaged or not e.damaged)]

    def damaged(self, include_deleted: bool = False) -> list[EpisodeSummary]:
        """Episodes that cannot be used, each with the reason (`damaged`)."""
        return [e for e in self.list(include_deleted, include_damaged=True) if e.damaged]

    def quarantine_damaged(self) -> list[tuple[Path, str]]:
        """Move damaged episodes (also from the trash) into `.quarantine/`, each with a `.reason.txt`."""
        moved = []
        for e in self.damaged(include_deleted=True):
            src = (self.trash if e.deleted else self.root) / e.file_name
            with self.locked():
                side = labels_path(src)
                if side.exists():
                    quarantine(side, self.root, e.damaged)
                moved.append((quarantine(src, self.root, e.damaged), e.damaged))
        if moved:
            self.list(include_deleted=True)
        return moved

    def rebuild_index(self) -> list[EpisodeSummary]:
        with self.locked():
            (self.root / INDEX).unlink(missing_ok=True)
        return self.list(include_deleted=True)

    # -- single episodes ----------------------------------------------------------------------------------
    def path(self, name: str, include_deleted: bool = False) -> Path:
        name = self._canonical(name)
        p = self.root / f"{name}{fmt.EPISODE_SUFFIX}"
        if p.exists():
            return p
        t = self.trash / f"{name}{fmt.EPISODE_SUFFIX}"
        if include_deleted and t.exists():
            return t
        raise StoreError(f"no episode {name!r} in {self.root}" + (" (it is in the trash)" if t.exists() else ""))

    @staticmethod
    def _canonical(name: str) -> str:
        """Accept `episode_3`, `episode_3.hdf5` or `3`."""
        name = Path(name).name
        if name.endswith(fmt.EPISODE_SUFFIX):
            name = name[: -len(fmt.EPISODE_SUFFIX)]
        return fmt.episode_name(int(name)) if name.isdigit() else name

    def show(self, name: str) -> EpisodeInfo:
        """Metadata of one episode; a file that cannot be read at all raises StoreError with the reason. A
        readable file with missing parts comes back with `problems` set (and a failing `file_integrity` check)."""
        path = self.path(name, include_deleted=True)
        try:
            return read_info(path)
        except READ_ERRORS as err:
            raise StoreError(f"{path.name} is damaged: {unreadable_reason(path, err)}. `rm` moves it to the "
                             f"trash; `recover --quarantine` sets damaged files aside.") from err

    def open(self, name: str) -> EpisodeReader:
        return EpisodeReader(self.path(name, include_deleted=True))

    def _update_labels(self, name: str, **changes) -> EpisodeInfo:
        self.show(name)  # a damaged file is refused with its reason before anything is written
        with self.locked():
            path = self.path(name, include_deleted=True)
            side = labels_path(path)
            d = json.loads(side.read_text()) if side.exists() else {}
            d.update(changes)
            try:
                atomic_write(side, json.dumps(d, indent=1).encode())
            except OSError as e:
                raise StoreError(unwritable(self.root, e, f"save the labels of {path.stem} in")) from e
        return self.show(name)

    def label(self, name: str, outcome: str, notes: str | None = None) -> EpisodeInfo:
        changes: dict = {"outcome": fmt.check_outcome(outcome)}
        if notes is not None:
            changes["notes"] = notes
        return self._update_labels(name, **changes)

    def set_notes(self, name: str, notes: str) -> EpisodeInfo:
        return self._update_labels(name, notes=notes)

    def set_segments(self, name: str, segments: Iterable[Segment]) -> EpisodeInfo:
        """Replace all segments. Overlaps within a lane are resolved in list order: a later segment wins its
        span and trims or splits the earlier ones (recorder.segments)."""
        info = self.show(name)
        try:
            segs = validate_segments(segments, info.steps)
        except ValueError as e:
            raise StoreError(f"{info.name}: {e}") from e
        return self._update_labels(name, segments=[asdict(s) for s in segs])

    def add_segment(self, name: str, segment: Segment) -> EpisodeInfo:
        """Add a segment to its lane; the neighbours it overlaps are trimmed, or split when it lands inside one."""
        return self.set_segments(name, [*self.show(name).segments, segment])

    def remove_segment(self, name: str, position: int) -> EpisodeInfo:
        """Remove segment #position, numbered as `episodes show` numbers them (recorder.segments.canonical)."""
        segs = canonical(self.show(name).segments)
        if not 0 <= position < len(segs):
            raise StoreError(f"{name} has {len(segs)} segments; no segment #{position}")
        del segs[position]
        return self.set_segments(name, segs)

    def _move(self, name: str, src: Path, dst: Path) -> None:
        with self.locked():
            s = src / f"{name}{fmt.EPISODE_SUFFIX}"
            d = dst / f"{name}{fmt.EPISODE_SUFFIX}"
            if not s.exists():
                raise StoreError(f"no episode {name!r} in {src}")
            if d.exists():
                raise StoreError(f"{d} already exists")
            try:
                dst.mkdir(exist_ok=True)
                side = labels_path(s)
                if side.exists():
                    os.replace(side, labels_path(d))
                os.replace(s, d)
            except OSError as e:
                raise StoreError(unwritable(self.root, e, f"move {name} in")) from e
        self.list(include_deleted=True)

    def remove(self, name: str) -> None:
        """Soft delete: move the episode into `.trash/` (restore brings it back)."""
        self._move(self._canonical(name), self.root, self.trash)

    def restore(self, name: str) -> None:
        self._move(self._canonical(name), self.trash, self.root)


def select(episodes: Iterable[EpisodeSummary], outcomes: Iterable[str] | None = None,
           quality: Iterable[str] | None = None, names: Iterable[str] | None = None) -> list[EpisodeSummary]:
    """Filter summaries, e.g. only successful episodes whose quality passed: outcomes={'success'}, quality={'pass'}."""
    o = set(outcomes) if outcomes else None
    q = set(quality) if quality else None
    n = {DatasetStore._canonical(x) for x in names} if names else None
    return [e for e in episodes if (o is None or e.outcome in o) and (q is None or e.quality in q)
            and (n is None or e.name in n)]


def why_none_selected(episodes: Iterable[EpisodeSummary], outcomes: Iterable[str] | None = None,
                      quality: Iterable[str] | None = None, names: Iterable[str] | None = None,
                      damaged: int = 0) -> str:
    """Why `select` chose nothing, in words: what was asked, and what the folder holds by outcome and quality (so
    "successes that passed quality" on a folder of WARN episodes says that, not just "nothing selected")."""
    eps = list(episodes)
    asked = [f"outcome {'/'.join(outcomes)}" if outcomes else "", f"quality {'/'.join(quality)}" if quality else "",
             f"episodes {', '.join(names)}" if names else ""]
    asked_s = " and ".join(a for a in asked if a) or "anything"
    left = f" ({damaged} damaged left out)" if damaged else ""
    if not eps:
        return f"no episodes to choose from{left}"

    def counts(key) -> str:
        c: dict[str, int] = {}
        for e in eps:
            c[key(e)] = c.get(key(e), 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))

    return (f"none of the {len(eps)} episodes{left} has {asked_s}: by outcome {counts(lambda e: e.outcome)}; "
            f"by quality {counts(lambda e: e.quality)}. Label episodes (episodes ... label), or widen the selection "
            "(e.g. --quality pass --quality warn)")
