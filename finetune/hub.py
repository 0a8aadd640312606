"""Resolving a checkpoint or tokenizer source: a local folder/file, or a Hugging Face hub repo (+ revision).

Downloads go through huggingface-hub, so HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN and `hf auth login`
all apply. A checkpoint download fetches only what loading needs, chosen from the repo's file listing
(`checkpoint_files`): config.json, the single model.safetensors when the repo has one, else the index and exactly
the shards it names, and the norm stats; its byte progress goes to a callback (`download_folder(...,
on_progress=...)`: the trainer's Download events, `workbench base download`). Offline (HF_HUB_OFFLINE=1, or the
hub unreachable) a complete cached copy is used. Failures are one HubError saying what to run and where.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total or 0)

DEFAULT_CHECKPOINT_REPO = "lerobot/pi0_base"
# finetune.checkpoint's layout (that module imports torch; this one must not: presets and the GUI import it)
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")


class HubError(RuntimeError):
    """A hub download failed; the message says why and what to do. `reason` is the cause alone (one line, for a
    list of sources tried), `unreachable` is True when the hub could not be asked (offline mode or no network)."""

    def __init__(self, message: str, reason: str | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.unreachable = unreachable


def _looks_local(source: str) -> bool:
    """Hub ids are exactly "owner/name"; anything else (absolute, relative, deeper) is meant as a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") != 1 or "\\" in source


def cache_dir() -> Path:
    """The hub cache in force (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cache_folder(repo: str) -> Path:
    """Where huggingface-hub keeps one model repo: the folder to copy to a machine without network."""
    return cache_dir() / f"models--{repo.replace('/', '--')}"


def fetch_command(repo: str, revision: str | None = None) -> str:
    """`workbench base download` for a checkpoint repo (what an offline error tells the user to run)."""
    return f"workbench base download {repo}" + (f" --revision {revision}" if revision else "")


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_files(paths: Collection[str], read_index: Callable[[], Mapping[str, Any]], what: str) -> list[str]:
    """The files loading a pi0 checkpoint needs, chosen from the repo's file list: config.json; the single
    model.safetensors when present (a repo with both a single file and shards is not fetched twice), else the
    index and exactly the shards its weight_map names; and any assets/<id>/norm_stats.json. `read_index` fetches
    and parses the index (only called when the shards are needed)."""
    if CONFIG_FILE not in paths:
        raise HubError(f"{what} has no {CONFIG_FILE} at its top level: not a pi0 checkpoint in the hub layout "
                       f"(files: {sorted(paths)[:12]}). Fix: pass --base {DEFAULT_CHECKPOINT_REPO}, or a repo / "
                       "folder with config.json + model.safetensors.", reason=f"no {CONFIG_FILE}")
    norm = sorted(p for p in paths if _is_norm_stats(p))
    if MODEL_FILE in paths:
        return [CONFIG_FILE, MODEL_FILE, *norm]
    if INDEX_FILE not in paths:
        raise HubError(f"{what} has neither {MODEL_FILE} nor {INDEX_FILE} (files: {sorted(paths)[:12]}): no pi0 "
                       "weights to fetch.", reason="no weights")
    try:
        shards = sorted({str(v) for v in read_index()["weight_map"].values()})
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise HubError(f"{what}: {INDEX_FILE} has no usable weight_map ({e!r}).", reason="bad index") from None
    missing = [s for s in shards if s not in paths]
    if missing:
        raise HubError(f"{what}: {INDEX_FILE} names shards the repo does not hold: {missing[:5]}.",
                       reason="shards missing")
    return [CONFIG_FILE, INDEX_FILE, *shards, *norm]


def _is_norm_stats(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "assets" and parts[2] == "norm_stats.json"


def _missing_weights(folder: Path) -> list[str]:
    """What a local snapshot lacks for loading (the choice finetune.checkpoint.list_checkpoint_files makes)."""
    if (folder / MODEL_FILE).is_file():
        return []
    if (folder / INDEX_FILE).is_file():
        try:
            shards = sorted(set(json.loads((folder / INDEX_FILE).read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return [f"{INDEX_FILE} (unreadable)"]
        return [s for s in shards if not (folder / s).is_file()]
    return [f"{MODEL_FILE} (or {INDEX_FILE} and its shards)"]


def cached_checkpoint(repo: str, revision: str | None = None) -> tuple[Path | None, list[str]]:
    """(the cached snapshot folder, what it lacks) without network; (None, [config.json]) when not cached."""
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(repo, CONFIG_FILE, revision=revision)
    if not isinstance(p, str):
        return None, [CONFIG_FILE]
    folder = Path(p).parent
    return folder, _missing_weights(folder)


def download_checkpoint(repo: str, *, revision: str | None = None, token: str | bool | None = None,
                        on_progress: Progress | None = None) -> Path:
    """A checkpoint repo -> its snapshot folder in the hub cache holding exactly `checkpoint_files`; resumes
    partial downloads. Offline or unreachable: the cached copy if it is complete, else an error naming the fix."""
    from huggingface_hub import HfApi, constants, hf_hub_download

    what = f"{repo}@{revision or 'main'}"
    fetch = fetch_command(repo, revision)
    if constants.HF_HUB_OFFLINE:
        return _from_cache(repo, revision, what, fetch, "offline mode is on (HF_HUB_OFFLINE=1)")
    try:
        info = _call(lambda: HfApi().model_info(repo, revision=revision, token=token, files_metadata=True),
                     repo, revision, fetch=fetch)
    except HubError as e:
        if e.unreachable:
            return _from_cache(repo, revision, what, fetch, e.reason)
        raise
    sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}

    def get(path: str, rev: str | None, bar: type | None = None) -> Path:
        return _call(lambda: Path(hf_hub_download(repo, path, revision=rev, token=token, tqdm_class=bar)),
                     repo, rev, path, fetch=fetch)

    # config.json by the revision asked for: huggingface-hub records the branch -> commit ref, so an offline run
    # naming the same revision finds this snapshot; everything else by that commit (one consistent snapshot)
    config = get(CONFIG_FILE, revision)
    folder = config.parent
    commit = folder.name if _COMMIT.fullmatch(folder.name) else (info.sha or revision)
    files = checkpoint_files(set(sizes), lambda: json.loads(get(INDEX_FILE, commit).read_text()), what)
    total = sum(sizes.get(f, 0) for f in files)
    done = sizes.get(CONFIG_FILE, 0)
    if on_progress is not None:
        on_progress(CONFIG_FILE, done, total)
    for path in files:
        if path == CONFIG_FILE:
            continue
        size = sizes.get(path, 0)
        bar = None
        if on_progress is not None:
            offset = done
            bar = progress_class(lambda _d, n, _t, path=path, offset=offset: on_progress(path, offset + n, total))
        get(path, commit, bar)
        done += size
        if on_progress is not None:
            on_progress(path, done, total)  # cached files report nothing themselves
    return folder


def _from_cache(repo: str, revision: str | None, what: str, fetch: str, reason: str) -> Path:
    folder, missing = cached_checkpoint(repo, revision)
    if folder is not None and not missing:
        return folder
    if folder is None:
        raise HubError(_not_cached(what, reason, repo, fetch), reason=f"not in the local cache and {reason}",
                       unreachable=True)
    raise HubError(f"{what} is only partly in the local cache ({folder} lacks {', '.join(missing[:4])}) and "
                   f"{reason}. Fix: run `{fetch}` while online (it fetches only what is missing), or copy a "
                   f"complete {cache_folder(repo).name} folder into {cache_dir()}.",
                   reason=f"incomplete in the local cache and {reason}", unreachable=True)


def resolve_folder(source: str | Path, *, revision: str | None = None, token: str | bool | None = None,
                   allow_patterns: list[str] | None = None, on_progress: Progress | None = None) -> Path:
    """Local folder -> itself; "owner/name" -> the downloaded (or cached) snapshot folder: a checkpoint's needed
    files (`download_checkpoint`), or with `allow_patterns` the files matching them (a policy folder)."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    s = str(source)
    if isinstance(source, Path) or _looks_local(s):
        raise HubError(f"checkpoint folder {s} does not exist (and is not a hub repo id like 'lerobot/pi0_base')")
    if allow_patterns is None:
        return download_checkpoint(s, revision=revision, token=token, on_progress=on_progress)
    from huggingface_hub import snapshot_download

    return _call(lambda: Path(snapshot_download(repo_id=s, revision=revision, token=token,
                                                allow_patterns=allow_patterns)),
                 s, revision, fetch=f"hf download {s}" + (f" --revision {revision}" if revision else ""))


def download_folder(source: str, *, revision: str | None = None, on_progress: Progress | None = None) -> Path:
    """`resolve_folder` for a checkpoint with its byte progress sent to `on_progress(file, done, total)`: done and
    total count the bytes of all the files fetched, `file` is the one being fetched."""
    return resolve_folder(source, revision=revision, on_progress=on_progress)


# ------------------------------------------------------------------------------------------ progress
class DownloadProgress:
    """A tqdm stand-in for huggingface-hub: byte counts go to `report(desc, done, total)`, at most every 0.5 s
    and once at the end. `progress_class(report)` binds the callback (huggingface-hub instantiates the class)."""

    report: Progress = staticmethod(lambda desc, done, total: None)  # type: ignore[assignment]

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.total = int(kw.get("total") or 0)
        self.n = int(kw.get("initial") or 0)
        self.desc = str(kw.get("desc") or "checkpoint")
        self._last = 0.0

    def update(self, n: int | float | None = 1) -> None:
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

    set_description_str = set_description

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

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


# ------------------------------------------------------------------------------------------ single files
def resolve_file(source: str | Path, filename: str, *, revision: str | None = None,
                 token: str | bool | None = None, on_progress: Progress | None = None,
                 fetch: str | None = None) -> Path:
    """A local file, a local folder containing `filename`, or `filename` from a hub repo. `fetch` is the command
    an offline error names (default: huggingface-hub's `hf download`)."""
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
    return _hub_file(s, filename, revision, token, on_progress,
                     fetch or f"hf download {s} {filename}" + (f" --revision {revision}" if revision else ""))


def _hub_file(repo: str, filename: str, revision: str | None, token: str | bool | None,
              on_progress: Progress | None, fetch: str) -> Path:
    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename, revision=revision)
    cached = Path(cached) if isinstance(cached, str) else None
    if cached is not None and (constants.HF_HUB_OFFLINE or (revision is not None and _COMMIT.fullmatch(revision))):
        return cached  # a commit never changes: no need to ask the hub
    if not constants.HF_HUB_OFFLINE:
        # one quick request first: huggingface-hub retries an unreachable hub for ~20 s per file download
        try:
            info = _call(lambda: HfApi().model_info(repo, revision=revision, token=token), repo, revision,
                         filename, fetch=fetch)
        except HubError as e:
            if e.unreachable and cached is not None:
                return cached
            raise
        names = {s.rfilename for s in (info.siblings or [])}
        if info.siblings is not None and filename not in names:
            raise HubError(f"{repo}@{revision or 'main'} has no {filename} (files: {sorted(names)[:10]}).",
                           reason=f"no {filename} at that revision")
    bar = None
    if on_progress is not None:  # named by the file (huggingface-hub would show a shortened URL)
        bar = progress_class(lambda _desc, done, total: on_progress(filename, done, total))
    return _call(lambda: Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision, token=token,
                                              tqdm_class=bar)),
                 repo, revision, filename, fetch=fetch)


# ------------------------------------------------------------------------------------------ errors
def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of whichever HTTP client this huggingface-hub uses (httpx2, httpx or requests)."""
    from huggingface_hub import errors as E

    out: list[type[BaseException]] = [E.OfflineModeIsEnabled]
    for mod, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                       ("requests", ("ConnectionError", "Timeout"))):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        out += [getattr(m, n) for n in names if isinstance(getattr(m, n, None), type)]
    return tuple(out)


def _not_cached(what: str, reason: str, repo: str, fetch: str) -> str:
    folder = cache_folder(repo).name
    return (f"{what} is not in the local cache ({cache_dir()}) and {reason}. Fix: on a machine with network run "
            f"`{fetch}`, then copy its ~/.cache/huggingface/hub/{folder} (or $HF_HOME/hub/{folder}) to "
            f"{cache_dir() / folder} here; or run it here while online. After that, runs work offline "
            "(HF_HUB_OFFLINE=1).")


def _call(fn, repo: str, revision: str | None, filename: str | None = None, *,  # type: ignore[no-untyped-def]
          fetch: str | None = None):
    from huggingface_hub import constants
    from huggingface_hub import errors as E

    what = f"{repo}@{revision or 'main'}" + (f" ({filename})" if filename else "")
    fetch = fetch or fetch_command(repo, revision)
    try:
        return fn()
    except E.GatedRepoError:
        raise HubError(
            f"{repo} is gated: accept its licence at https://huggingface.co/{repo} with your account, then log in "
            "(`hf auth login`) or set HF_TOKEN / pass token=.",
            reason="gated: accept its licence on the hub, then `hf auth login` or HF_TOKEN") from None
    except E.RepositoryNotFoundError:
        raise HubError(f"{repo} not found on the hub (or private: log in / set HF_TOKEN).",
                       reason="repo not found (or private)") from None
    except E.RevisionNotFoundError:
        raise HubError(f"{repo} has no revision {revision!r}.", reason=f"no revision {revision!r}") from None
    except E.LocalEntryNotFoundError:
        reason = ("offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE
                  else "the hub could not be reached")
        raise HubError(_not_cached(what, reason, repo, fetch), reason=f"not in the local cache and {reason}",
                       unreachable=True) from None
    except E.EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass
        raise HubError(f"{what}: file not found in the repo.", reason="file not found in the repo") from None
    except E.HfHubHTTPError as e:
        raise HubError(f"{what}: hub request failed: {e}", reason=f"hub request failed ({e})") from None
    except _network_errors() as e:
        reason = ("offline mode is on (HF_HUB_OFFLINE=1)" if isinstance(e, E.OfflineModeIsEnabled)
                  else f"the hub ({constants.ENDPOINT}) could not be reached ({type(e).__name__})")
        raise HubError(_not_cached(what, reason, repo, fetch), reason=f"not in the local cache and {reason}",
                       unreachable=True) from None


@dataclass(frozen=True)
class BaseReady:
    """The outcome line of `workbench base download --json` ({"event": "base_ready", ...}), read by the Train
    tab: where the checkpoint and the tokenizer are, and the cache to copy for a machine without network."""

    kind = "base_ready"
    repo: str
    revision: str | None
    checkpoint: str
    tokenizer: str | None
    cache: str
    bytes: int

    def to_json(self) -> str:
        from dataclasses import asdict

        return json.dumps({"event": self.kind, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def parse(cls, line: str) -> "BaseReady | None":
        try:
            d = json.loads(line)
        except ValueError:
            return None
        if not isinstance(d, dict) or d.pop("event", None) != cls.kind:
            return None
        try:
            return cls(**d)
        except TypeError:
            return None
