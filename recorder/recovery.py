"""Crash recovery: turn journals left in `.incoming/` by a killed recorder into episodes, or quarantine them.

A journal whose writer is alive is locked (flock) and left alone, so a GUI and a CLI can both call this.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from drivers.arm import BIMANUAL_DOF
from recorder import format as fmt
from recorder import journal as jr
from recorder.finalize import INCOMING, SavedEpisode, finalize_file
from recorder.h5file import EpisodeFileBuilder

log = logging.getLogger(__name__)

QUARANTINE = ".quarantine"


class NothingToRecover(ValueError):
    pass


def recover_journal(journal_path: Path, final_path: Path, reason: str = "crash") -> SavedEpisode:
    """Rebuild an episode from the intact prefix of its journal and publish it as `final_path`."""
    header, records = jr.read_journal(journal_path)
    cams = list(header["cameras"])
    nj = int(header.get("n_joints", BIMANUAL_DOF))
    tmp = journal_path.with_name(f"{header['name']}.recovering{fmt.EPISODE_SUFFIX}")
    tmp.unlink(missing_ok=True)
    builder = EpisodeFileBuilder(tmp, cams, nj)
    try:
        last = [b""] * len(cams)
        dropped = [0] * len(cams)
        marks: list[tuple[int, str]] = []
        ended = False
        for rtype, payload in records:
            if rtype == jr.STEP:
                builder.append_step(jr.decode_step(payload, nj, len(cams)))
            elif rtype == jr.FRAME:
                step, c, flags, jpeg = jr.decode_frame(payload)
                if flags:
                    jpeg = last[c]
                    dropped[c] += bool(flags & jr.FLAG_WRITER_DROP)
                builder.append_frame(c, step, jpeg)
                last[c] = jpeg
            elif rtype == jr.MARK:
                d = json.loads(payload)
                if "meta" in d:
                    header.update(d["meta"])
                else:
                    marks.append((int(d["step"]), str(d["label"])))
            elif rtype == jr.END:
                ended = True
        if builder.complete_steps == 0:
            raise NothingToRecover(f"{journal_path}: no complete step in the journal")
        note = (f"recovered from the journal after a {reason}"
                + ("" if ended else "; the last ~0.5 s before it may be missing"))
        header["notes"] = (header.get("notes", "") + "\n" + note).strip()
        saved = finalize_file(builder, final_path, header, marks, dropped,
                              extra_attrs={"recovered": True, "recovery_note": note})
    except BaseException:
        builder.abort()  # a full disk: nothing more is written, the close cannot fail (recorder.h5file.GuardedFile)
        tmp.unlink(missing_ok=True)
        raise
    return saved


@dataclass
class RecoveryResult:
    recovered: list[SavedEpisode] = field(default_factory=list)
    quarantined: list[tuple[Path, str]] = field(default_factory=list)
    live: list[Path] = field(default_factory=list)  # journals of recordings still running
    empty: list[Path] = field(default_factory=list)  # killed before the first step reached disk: removed

    def format(self) -> str:
        lines = [f"recovered {s.path.name}: {s.steps} steps, {s.duration_s:.1f} s, quality {s.quality.status}"
                 for s in self.recovered]
        lines += [f"quarantined {p}: {why}" for p, why in self.quarantined]
        lines += [f"still recording (left alone): {p.name}" for p in self.live]
        return "\n".join(lines) or "nothing to recover"


def quarantine(path: Path, root: Path, reason: str) -> Path:
    qdir = root / QUARANTINE
    qdir.mkdir(exist_ok=True)
    dest = qdir / path.name
    shutil.move(str(path), dest)
    (qdir / f"{path.name}.reason.txt").write_text(reason + "\n")
    log.warning("quarantined %s: %s", path, reason)
    return dest


def recover_dataset(root: Path) -> RecoveryResult:
    root = Path(root)
    inc = root / INCOMING
    res = RecoveryResult()
    if not inc.is_dir():
        return res
    for jpath in sorted(inc.glob("*.journal")):
        name = jpath.name[: -len(".journal")]
        final = root / f"{name}{fmt.EPISODE_SUFFIX}"
        partial = inc / f"{name}.partial{fmt.EPISODE_SUFFIX}"
        try:
            fd = os.open(jpath, os.O_RDONLY)
        except FileNotFoundError:
            continue  # finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                res.live.append(jpath)
                continue
            if not jpath.exists():
                continue
            partial.unlink(missing_ok=True)  # written without crash protection; the journal is the truth
            if final.exists():  # killed between publishing the file and removing the journal
                jpath.unlink()
                continue
            try:
                res.recovered.append(recover_journal(jpath, final))
                jpath.unlink()
            except NothingToRecover:
                jpath.unlink()
                res.empty.append(jpath)
            except (jr.JournalCorrupt, ValueError, KeyError) as e:
                res.quarantined.append((quarantine(jpath, root, str(e)), str(e)))
        finally:
            os.close(fd)
    for stray in sorted(inc.glob(f"*.partial{fmt.EPISODE_SUFFIX}")):
        if not (inc / stray.name.replace(f".partial{fmt.EPISODE_SUFFIX}", ".journal")).exists():
            why = "episode file without its journal (cannot be trusted after a crash)"
            res.quarantined.append((quarantine(stray, root, why), why))
    for leftover in inc.glob(f"*.recovering{fmt.EPISODE_SUFFIX}"):
        if not (inc / leftover.name.replace(f".recovering{fmt.EPISODE_SUFFIX}", ".journal")).exists():
            leftover.unlink(missing_ok=True)
    return res
