"""Resolving a checkpoint or tokenizer source: a local folder/file, or a Hugging Face hub repo (+ revision).

Downloads go through huggingface-hub, so HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN and `hf auth login`
all apply, and its progress bars show (or go to a callback: `download_folder(..., on_progress=...)`, the
trainer's Download events). Failures are turned into one HubError saying what to do.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total or 0)

DEFAULT_CHECKPOINT_REPO = "lerobot/pi0_base"
CHECKPOINT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "assets/*/norm_stats.json",
                       "*.md"]


class HubError(RuntimeError):
    """A hub download failed; the message says why and what to do."""


def _looks_local(source: str) -> bool:
    """Hub ids are exactly "owner/name"; anything else (absolute, relative, deeper) is meant as a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") != 1 or "\\" in source


def resolve_folder(source: str | Path, *, revision: str | None = None, token: str | bool | None = None,
                   allow_patterns: list[str] | None = None, tqdm_class: type | None = None) -> Path:
    """Local folder -> itself; "owner/name" -> the downloaded (or cached) snapshot folder. `tqdm_class` receives
    the byte progress (the trainer turns it into events); downloads resume from huggingface-hub's partial files."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    s = str(source)
    if isinstance(source, Path) or _looks_local(s):
        raise HubError(f"checkpoint folder {s} does not exist (and is not a hub repo id like 'lerobot/pi0_base')")
    from huggingface_hub import snapshot_download

    extra = {"tqdm_class": tqdm_class} if tqdm_class is not None else {}
    return _call(lambda: Path(snapshot_download(repo_id=s, revision=revision, token=token,
                                                allow_patterns=allow_patterns or CHECKPOINT_PATTERNS, **extra)),
                 s, revision)


class DownloadProgress:
    """A tqdm stand-in for huggingface-hub: byte counts go to `report(desc, done, total)`, at most every 0.5 s
    and once at the end. `progress_class(report)` binds the callback (huggingface-hub instantiates the class)."""

    report: Progress = staticmethod(lambda desc, done, total: None)  # type: ignore[assignment]

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.total = int(kw.get("total") or 0)
        self.n = int(kw.get("initial") or 0)
        self.desc = str(kw.get("desc") or "checkpoint")
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.n += int(n or 0)
        now = time.monotonic()
        if now - self._last > 0.5 or (self.total and self.n >= self.total):
            self._last = now
            type(self).report(self.desc, self.n, self.total)

    def close(self) -> None:
        type(self).report(self.desc, self.n, self.total)

    def __enter__(self) -> "DownloadProgress":
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    @classmethod
    def get_lock(cls) -> Any:
        return threading.RLock()

    @classmethod
    def set_lock(cls, lock: Any) -> None:
        pass


def progress_class(report: Progress) -> type[DownloadProgress]:
    return type("BoundDownloadProgress", (DownloadProgress,), {"report": staticmethod(report)})


def download_folder(source: str, *, revision: str | None = None, on_progress: Progress | None = None) -> Path:
    """`resolve_folder` for a hub repo with its byte progress sent to `on_progress(desc, done, total)`."""
    return resolve_folder(source, revision=revision,
                          tqdm_class=progress_class(on_progress) if on_progress is not None else None)


def resolve_file(source: str | Path, filename: str, *, revision: str | None = None,
                 token: str | bool | None = None) -> Path:
    """A local file, a local folder containing `filename`, or `filename` from a hub repo."""
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / filename).is_file():
            return p / filename
        raise HubError(f"{p} has no {filename}")
    s = str(source)
    if isinstance(source, Path) or _looks_local(s):
        raise HubError(f"{s} does not exist (and is not a hub repo id)")
    from huggingface_hub import hf_hub_download

    return _call(lambda: Path(hf_hub_download(repo_id=s, filename=filename, revision=revision, token=token)),
                 s, revision, filename)


def _call(fn, repo: str, revision: str | None, filename: str | None = None):  # type: ignore[no-untyped-def]
    from huggingface_hub import constants
    from huggingface_hub import errors as E

    what = f"{repo}@{revision or 'main'}" + (f" ({filename})" if filename else "")
    try:
        return fn()
    except E.GatedRepoError:
        raise HubError(
            f"{repo} is gated: accept its licence at https://huggingface.co/{repo} with your account, then log in "
            "(`hf auth login`) or set HF_TOKEN / pass token=.") from None
    except E.RepositoryNotFoundError:
        raise HubError(f"{repo} not found on the hub (or private: log in / set HF_TOKEN).") from None
    except E.RevisionNotFoundError:
        raise HubError(f"{repo} has no revision {revision!r}.") from None
    except E.LocalEntryNotFoundError:
        offline = constants.HF_HUB_OFFLINE
        reason = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the hub could not be reached"
        raise HubError(
            f"{what} is not in the local cache ({constants.HF_HUB_CACHE}) and {reason}. Download it once while "
            "online (same HF_HOME), or pass a local folder.") from None
    except E.EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass
        raise HubError(f"{what}: file not found in the repo.") from None
    except E.HfHubHTTPError as e:
        raise HubError(f"{what}: hub request failed: {e}") from None
