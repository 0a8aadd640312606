"""Hub resolution without network: local folders, the offline cache, and the offline-not-cached error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetune.hub import HubError, resolve_file, resolve_folder

ROOT = Path(__file__).resolve().parents[2]


def run_offline(code: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_local_folder_and_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_folder(tmp_path) == tmp_path
    assert resolve_folder(str(tmp_path)) == tmp_path
    assert resolve_file(tmp_path, "config.json") == tmp_path / "config.json"
    with pytest.raises(HubError, match="does not exist"):
        resolve_folder(tmp_path / "missing")
    with pytest.raises(HubError, match="does not exist"):
        resolve_folder("./not/a/repo/id")
    with pytest.raises(HubError, match="has no tokenizer.model"):
        resolve_file(tmp_path, "tokenizer.model")


def test_offline_and_not_cached_is_a_clear_error(tmp_path):
    proc = run_offline("""
        from finetune.hub import resolve_folder, HubError
        try:
            resolve_folder("lerobot/pi0_base")
        except HubError as e:
            print("ERR", e)
        from finetune.tokenizer import PromptTokenizer
        try:
            PromptTokenizer.from_source("lerobot/pi0")
        except HubError as e:
            print("ERR", e)
    """, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERR")]
    assert len(lines) == 2, proc.stdout + proc.stderr
    assert "lerobot/pi0_base@main is not in the local cache" in lines[0]
    assert "HF_HUB_OFFLINE=1" in lines[0] and str(tmp_path / "hf") in lines[0]
    assert "lerobot/pi0@main (tokenizer.model)" in lines[1]


def test_offline_uses_the_hf_home_cache(tmp_path):
    """A snapshot already in $HF_HOME is used offline (the layout huggingface-hub writes)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--lerobot--pi0_base"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    proc = run_offline("""
        from finetune.hub import resolve_folder
        print("DIR", resolve_folder("lerobot/pi0_base"))
    """, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr
    assert f"DIR {snap}" in proc.stdout


def test_hub_errors_are_translated():
    """The real huggingface-hub exception types (as raised for a 403 gated / 404 repo) become clear HubErrors."""
    httpx = pytest.importorskip("httpx2", reason="huggingface-hub's HTTP client")
    from huggingface_hub import errors as E

    from finetune.hub import _call

    req = httpx.Request("GET", "https://huggingface.co/api/models/google/paligemma-3b-pt-224")
    for exc, expected in ((E.GatedRepoError, "is gated"), (E.RepositoryNotFoundError, "not found on the hub"),
                          (E.RevisionNotFoundError, "has no revision 'v9'")):
        def boom(exc=exc):
            raise exc("server says no", response=httpx.Response(403, request=req))

        with pytest.raises(HubError, match=expected):
            _call(boom, "google/paligemma-3b-pt-224", "v9")


def test_download_progress_reaches_the_callback():
    """The tqdm stand-in huggingface-hub drives (finetune.hub.progress_class): throttled byte counts, then the
    total at the end; the trainer turns them into Download events."""
    from finetune.hub import progress_class

    seen: list[tuple[str, int, int]] = []
    bar = progress_class(lambda *a: seen.append(a))(total=300, initial=0, desc="model.safetensors")
    with bar:
        for _ in range(3):
            bar.update(100)
    assert seen[0] == ("model.safetensors", 100, 300) and seen[-1] == ("model.safetensors", 300, 300)
    assert list(bar) == [] and bar.get_lock() is not None
