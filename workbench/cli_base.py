"""`workbench base download [REPO]`: the base checkpoint (default: the pi0 preset's) and PaliGemma's tokenizer
into the Hugging Face hub cache, with byte progress, so that training can then run offline (HF_HUB_OFFLINE=1) or
the cache folders can be copied to a machine without network.

Only the files loading needs are fetched (finetune.hub.checkpoint_files); the tokenizer comes from the first of
finetune.tokenizer.PALIGEMMA_SOURCES that has it (or --tokenizer) and is identity-checked. With --json every line
is a JSON event: finetune.events Status / Download / Failed, then finetune.hub.BaseReady ("base_ready"); the
Train tab's "Download base" button runs this as its child process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from finetune import events as ev
from finetune import presets
from finetune.hub import BaseReady, HubError

EXIT_FAILED = 2


class NotPi0Error(RuntimeError):
    """The repo's config.json is not a pi0 configuration."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("base", help="base checkpoints: download one (and the tokenizer) for offline training",
                       description="Base checkpoints for `workbench train`.")
    bsub = p.add_subparsers(dest="base_command", metavar="COMMAND", required=True)
    d = bsub.add_parser(
        "download", help="fetch a base checkpoint and PaliGemma's tokenizer into the hub cache",
        description="Fetch a pi0 base checkpoint (only config.json, the weights loading needs and norm stats) and "
                    "PaliGemma's tokenizer.model into the Hugging Face hub cache (HF_HOME / HF_HUB_CACHE), with "
                    "byte progress; interrupted downloads resume. Afterwards `workbench train` runs offline "
                    "(HF_HUB_OFFLINE=1), or the printed cache folders can be copied to a machine without network.")
    d.add_argument("repo", nargs="?", default=presets.preset("pi0").base, metavar="REPO",
                   help="hub repo of the base checkpoint [default: %(default)s, the pi0 presets' base; "
                        f"{presets.PI05_BASE} is the pi0.5 presets' (--config pi05 / pi05-lora)]")
    d.add_argument("--revision", help="branch, tag or commit of REPO [default: main]")
    d.add_argument("--tokenizer", metavar="SOURCE",
                   help="tokenizer.model file, folder or hub repo instead of the default sources "
                        "(lerobot/pi0 at a pinned commit, then the gated google/paligemma-3b-pt-224)")
    d.add_argument("--tokenizer-only", action="store_true", help="fetch only the tokenizer")
    d.add_argument("--json", action="store_true", help="JSON events on stdout (the Train tab)")
    d.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    from finetune.tokenizer import TokenizerMismatch, TokenizerUnavailable

    out = _Output(args.json)
    try:
        ready = download_base(args.repo, revision=args.revision, tokenizer=args.tokenizer,
                              tokenizer_only=args.tokenizer_only, emit=out.event)
    except TokenizerUnavailable as e:
        return out.fail("tokenizer_unavailable", str(e))
    except HubError as e:
        return out.fail("base_unavailable", str(e))
    except TokenizerMismatch as e:
        return out.fail("wrong_tokenizer", str(e))
    except NotPi0Error as e:
        return out.fail("not_pi0", str(e))
    if args.json:
        print(ready.to_json(), flush=True)
    else:
        print(_summary(ready, args.revision, args.tokenizer_only), flush=True)
    return 0


def download_base(repo: str, *, revision: str | None = None, tokenizer: str | None = None,
                  tokenizer_only: bool = False, emit: Callable[[ev.Event], None] = lambda e: None) -> BaseReady:
    """The checkpoint, then the tokenizer: fetched when the checkpoint is full-size (its config's vocab size is
    PaliGemma's), when `tokenizer` names one, or with tokenizer_only; a small model's runs train their own."""
    from finetune.hub import CONFIG_FILE, cache_dir, download_folder, resolve_file
    from finetune.model_config import PALIGEMMA_VOCAB_SIZE, Pi0Config
    from finetune.tokenizer import TOKENIZER_FILE, TokenizerUnavailable, check_tokenizer_fits, paligemma_tokenizer

    def progress(what: str, done: int, total: int) -> None:
        emit(ev.Download(what, done, total))

    folder: Path | None = None
    vocab = PALIGEMMA_VOCAB_SIZE
    if not tokenizer_only:
        emit(ev.Status(f"fetching base checkpoint {repo}@{revision or 'main'} (only the files loading needs)"))
        folder = download_folder(repo, revision=revision, on_progress=progress)
        try:
            vocab = Pi0Config.from_dict(json.loads((folder / CONFIG_FILE).read_text())).vocab_size
        except (ValueError, KeyError, TypeError) as e:
            raise NotPi0Error(f"{repo}: its config.json is not a pi0 or pi0.5 configuration ({e}). Fix: pass a "
                              f"base such as {presets.PI0_BASE} (pi0) or {presets.PI05_BASE} (pi0.5).") from None
    tok: Path | None = None
    if tokenizer or tokenizer_only or vocab >= PALIGEMMA_VOCAB_SIZE:
        emit(ev.Status(f"fetching the tokenizer ({tokenizer or 'PaliGemma, default sources'})"))
        try:
            tok = (resolve_file(tokenizer, TOKENIZER_FILE, on_progress=progress) if tokenizer
                   else paligemma_tokenizer(on_progress=progress))
        except TokenizerUnavailable:
            raise
        except HubError as e:  # a named source: the tokenizer's failure, not the checkpoint's
            raise TokenizerUnavailable(str(e), e.reason, e.unreachable) from None
        check_tokenizer_fits(tok, vocab)
    else:
        emit(ev.Status(f"{repo} is a small model (vocabulary {vocab}): its runs train their own tokenizer"))
    size = sum(p.stat().st_size for p in (folder.rglob("*") if folder else ()) if p.is_file())
    size += tok.stat().st_size if tok is not None else 0
    return BaseReady(repo=repo, revision=revision, checkpoint=str(folder) if folder else "",
                     tokenizer=str(tok) if tok else None, cache=str(cache_dir()), bytes=size)


def _repo_cache_folder(path: str) -> Path | None:
    """The models--owner--name folder a cached file lives in (None: not in the hub cache, a local file)."""
    for parent in Path(path).parents:
        if parent.name.startswith("models--"):
            return parent
    return None


def _summary(r: BaseReady, revision: str | None, tokenizer_only: bool) -> str:
    lines = []
    if r.checkpoint:
        lines.append(f"checkpoint  {r.repo}@{revision or 'main'}: {r.checkpoint}")
    if r.tokenizer:
        lines.append(f"tokenizer   {r.tokenizer}")
    lines.append(f"{r.bytes / 1e6:,.1f} MB in the hub cache {r.cache}")
    base = _train_flags(r)
    rev = f" --revision {revision}" if revision and not tokenizer_only else ""
    tok = f" --tokenizer {r.tokenizer}" if r.tokenizer and _repo_cache_folder(r.tokenizer) is None else ""
    lines.append("Training can now run offline (no network needed):")
    lines.append(f"  HF_HUB_OFFLINE=1 workbench train --dataset DATA --out runs/NAME{base}{rev}{tok}")
    folders = [f for f in {_repo_cache_folder(p) for p in (r.checkpoint, r.tokenizer) if p} if f is not None]
    if folders:
        lines.append("For a machine without network, copy " + " and ".join(str(f) for f in sorted(folders))
                     + " into its hub cache (~/.cache/huggingface/hub, or $HF_HOME/hub), then run as above.")
    return "\n".join(lines)


def _train_flags(r: BaseReady) -> str:
    """The `workbench train` flags for this base: the preset of its kind (pi0 / pi0.5, from its config.json;
    training refuses a base of the other kind) and --base unless it is that preset's own base."""
    from finetune.hub import CONFIG_FILE
    from finetune.model_config import Pi0Config

    if not r.checkpoint:
        return ""
    try:
        mc = Pi0Config.from_dict(json.loads((Path(r.checkpoint) / CONFIG_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return f" --base {r.repo}"
    full = "pi0" if mc.kind == "pi0" else "pi05"  # the full fine-tune of that kind
    named = [n for n in presets.names_for_kind(mc.kind) if presets.preset(n).model == mc.name]  # pi05_tiny
    name = full if full in named or not named else named[0]
    flags = "" if name == presets.DEFAULT else f" --config {name}"
    return flags + ("" if presets.preset(name).base == r.repo else f" --base {r.repo}")


class _Output:
    """JSON events (--json) or readable lines; progress lines at most twice a second."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self._last = 0.0
        self._shown: tuple[str, int] | None = None

    def event(self, e: ev.Event) -> None:
        if self.json:
            print(ev.to_json(e), flush=True)
            return
        if isinstance(e, ev.Download):
            now = time.monotonic()
            if (now - self._last < 0.5 and e.done < e.total) or self._shown == (e.what, e.done):
                return
            self._last, self._shown = now, (e.what, e.done)
            pct = f" ({100 * e.done / e.total:5.1f}%)" if e.total else ""
            print(f"  {e.what}: {e.done / 1e6:,.1f} / {e.total / 1e6:,.1f} MB{pct}", flush=True)
        elif isinstance(e, ev.Status):
            print(e.text, flush=True)

    def fail(self, error: str, message: str) -> int:
        if self.json:
            print(ev.to_json(ev.Failed(error, message)), flush=True)
        else:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED
