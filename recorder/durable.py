"""fsync helpers for crash-safe writes (episodes, checkpoints, policy folders): one copy for every writer."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path | str) -> None:
    """Flush a file's or a directory's (its entries: a rename) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path | str) -> None:
    """Every file below `folder`, then the folder itself: before renaming a finished folder into place."""
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            fsync_path(p)
    fsync_path(folder)
