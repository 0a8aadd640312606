"""`workbench base download` against the fake hub (a real HTTP server huggingface-hub talks to, in the hub's
layouts of today): the checkpoint's needed files and PaliGemma's tokenizer into the cache, then offline runs
(HF_HUB_OFFLINE=1) resolve from it; an unreachable hub and a missing tokenizer give the actionable message; the
tokenizer sources are tried in order (pinned lerobot/pi0, then the gated PaliGemma repo)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))

from hub_helpers import FakeHub, host_tokenizer_sources, hub_env, run_python, tiny_base_files, workbench  # noqa: E402

from finetune import events as ev  # noqa: E402
from finetune.hub import BaseReady  # noqa: E402
from finetune.tokenizer import DEFAULT_TOKENIZER_REVISION, GATED_TOKENIZER_SOURCE  # noqa: E402

TINY_TRAIN = ["train", "--config", "tiny", "--dataset", "synthetic", "--steps", "2", "--batch", "2", "--workers", "0",
              "--log-every", "1", "--val-every", "0", "--json"]


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()


def _events(stdout: str) -> list:
    return [e for e in (ev.parse(line) for line in stdout.splitlines()) if e is not None]


def _ready(stdout: str) -> BaseReady:
    found = [r for r in (BaseReady.parse(line) for line in stdout.splitlines()) if r is not None]
    assert len(found) == 1, stdout
    return found[0]


@pytest.mark.system  # end to end through a child process: CI's system step (README)
def test_download_then_training_runs_offline_from_the_cache(hub, tmp_path):
    """The tiny base and the default tokenizer are fetched with byte progress; then, offline, a training run from
    that base resolves it from the cache (resolve_base), and the full-size path's tokenizer resolves too."""
    files = tiny_base_files(tmp_path / "tiny_base")
    hub.add_model("lab/pi0-tiny", {**files, "README.md": b"card"})
    host_tokenizer_sources(hub)
    hf = tmp_path / "hf"
    r = workbench("base", "download", "lab/pi0-tiny", "--json", env=hub_env(hub, hf))
    assert r.returncode == 0, r.stdout + r.stderr
    ready = _ready(r.stdout)
    assert ready.tokenizer is None and Path(ready.checkpoint).parent.name == "snapshots"  # small: no tokenizer
    downloads = [e for e in _events(r.stdout) if isinstance(e, ev.Download)]
    assert downloads[-1].done == downloads[-1].total == sum(len(b) for b in files.values())
    assert sorted(hub.downloaded("lab/pi0-tiny")) == sorted(files)  # not the README

    r = workbench("base", "download", "--tokenizer-only", env=hub_env(hub, hf))  # the readable output
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"models--lerobot--pi0/snapshots/{DEFAULT_TOKENIZER_REVISION}/tokenizer.model" in r.stdout
    assert "HF_HUB_OFFLINE=1 workbench train" in r.stdout and str(hf / "hub" / "models--lerobot--pi0") in r.stdout
    assert hub.downloads[-1] == ("lerobot/pi0", DEFAULT_TOKENIZER_REVISION, "tokenizer.model")
    assert "tokenizer.model" not in [p for repo, c, p in hub.downloads if c != DEFAULT_TOKENIZER_REVISION]

    n = len(hub.downloads)
    offline = hub_env(None, hf, HF_HUB_OFFLINE="1")
    run = workbench(*TINY_TRAIN, "--base", "lab/pi0-tiny", "--out", str(tmp_path / "run"), env=offline)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    finished = [e for e in _events(run.stdout) if isinstance(e, ev.Finished)]
    assert finished and finished[-1].reason == "done"
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert cfg["base"] == "lab/pi0-tiny"
    proc = run_python(textwrap.dedent(f"""
        from finetune.model_config import PALIGEMMA_VOCAB_SIZE
        from finetune.tokenizer import tokenizer_for_run
        print("TOK", tokenizer_for_run(None, {str(tmp_path / 'r2')!r}, PALIGEMMA_VOCAB_SIZE))
    """), offline)
    assert f"TOK {ready.cache}/models--lerobot--pi0/snapshots/{DEFAULT_TOKENIZER_REVISION}/tokenizer.model" \
        in proc.stdout, proc.stderr[-2000:]
    assert len(hub.downloads) == n  # nothing asked of the hub


def test_an_unreachable_hub_says_what_to_run_and_where(tmp_path):
    """No hub (a port nobody listens on), nothing cached: the download, the tokenizer and an offline training
    run each name the command, the cache folder to copy and HF_HUB_OFFLINE=1."""
    hf = tmp_path / "hf"
    r = workbench("base", "download", "--json", env=hub_env(None, hf))
    assert r.returncode == 2
    failed = [e for e in _events(r.stdout) if isinstance(e, ev.Failed)]
    assert failed and failed[0].error == "base_unavailable", r.stdout + r.stderr
    msg = failed[0].message
    assert "lerobot/pi0_base@main is not in the local cache" in msg and "could not be reached" in msg
    assert "on a machine with network run `workbench base download lerobot/pi0_base`" in msg
    assert str(hf / "hub" / "models--lerobot--pi0_base") in msg and "HF_HUB_OFFLINE=1" in msg

    r = workbench("base", "download", "--tokenizer-only", env=hub_env(None, hf))
    assert r.returncode == 2 and "error: no PaliGemma tokenizer.model" in r.stderr
    assert "1. lerobot/pi0@53f6654dc7b8 (tokenizer.model; public, no account): not in the local cache" in r.stderr
    assert f"2. {GATED_TOKENIZER_SOURCE}@main (tokenizer.model; gated" in r.stderr
    assert "`workbench base download --tokenizer-only`" in r.stderr and "--tokenizer /path/to/tokenizer.model" \
        in r.stderr and str(hf / "hub" / "models--lerobot--pi0") in r.stderr

    run = workbench("train", "--config", "pi0", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--json",
                    env=hub_env(None, hf, HF_HUB_OFFLINE="1"))
    failed = [e for e in _events(run.stdout) if isinstance(e, ev.Failed)]
    assert failed and failed[0].error == "base_unavailable", run.stdout[-2000:] + run.stderr[-2000:]
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in failed[0].message
    assert "`workbench base download lerobot/pi0_base`" in failed[0].message


def test_tokenizer_sources_are_tried_in_order_and_a_wrong_file_is_passed_over(hub, tmp_path):
    """lerobot/pi0 at main has no tokenizer.model any more (never asked for); the pinned commit serving a wrong
    file is refused by the identity check, naming it; the gated repo refuses without a token and serves with one."""
    from finetune.tokenizer import train_small_tokenizer

    host_tokenizer_sources(hub, gated=True, pinned_file=train_small_tokenizer(tmp_path / "small").read_bytes())
    code = textwrap.dedent("""
        from finetune.tokenizer import paligemma_tokenizer, TokenizerUnavailable
        try:
            print("TOK", paligemma_tokenizer())
        except TokenizerUnavailable as e:
            print("ERR", e)
    """)
    proc = run_python(code, hub_env(hub, tmp_path / "hf"))
    assert "ERR no PaliGemma tokenizer.model" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    first, second = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith(("1.", "2."))]
    assert "lerobot/pi0@53f6654dc7b8" in first and "is not PaliGemma's tokenizer.model" in first
    assert "120 pieces" in first and f"snapshots/{DEFAULT_TOKENIZER_REVISION}/tokenizer.model" in first
    assert GATED_TOKENIZER_SOURCE in second and "gated: accept its licence" in second
    assert {c for r, c, _ in hub.downloads if r == "lerobot/pi0"} == {DEFAULT_TOKENIZER_REVISION}  # not main

    proc = run_python(code, hub_env(hub, tmp_path / "hf", HF_TOKEN="hf_fake"))
    assert f"TOK {tmp_path / 'hf' / 'hub'}/models--google--paligemma-3b-pt-224/snapshots/" in proc.stdout, \
        proc.stdout + proc.stderr[-2000:]
    assert hub.downloads[-1][0] == GATED_TOKENIZER_SOURCE
