"""Hub resolution: local folders, the offline cache and the offline-not-cached error; against the fake hub (a real
HTTP server, tests/recorder/fake_hub.py): only the files loading needs are downloaded."""

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
    # what to run and where: the command, the cache folder to copy, offline afterwards
    assert "`workbench base download lerobot/pi0_base`" in lines[0]
    assert str(tmp_path / "hf" / "hub" / "models--lerobot--pi0_base") in lines[0]
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
    code = """
        from finetune.hub import resolve_folder, HubError
        try:
            print("DIR", resolve_folder("lerobot/pi0_base"))
        except HubError as e:
            print("ERR", e)
    """
    proc = run_offline(code, tmp_path / "hf")  # config.json alone: no weights to load
    assert "ERR lerobot/pi0_base@main is only partly in the local cache" in proc.stdout, proc.stdout + proc.stderr
    assert "model.safetensors" in proc.stdout and "`workbench base download lerobot/pi0_base`" in proc.stdout
    (snap / "model.safetensors").write_bytes(b"weights")
    proc = run_offline(code, tmp_path / "hf")
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


# ------------------------------------------------------------------------------------------ the fake hub
SHARDS = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}


def test_checkpoint_files_prefers_the_single_file_else_exactly_the_indexed_shards():
    from finetune.hub import checkpoint_files

    both = {"config.json", "model.safetensors", "model.safetensors.index.json", *SHARDS.values(),
            "model-00003-of-00003.safetensors", "assets/aloha/norm_stats.json", "README.md", "optimizer.pt"}
    calls: list[int] = []

    def index():
        calls.append(1)
        return {"weight_map": SHARDS}

    assert checkpoint_files(both, index, "r") == ["config.json", "model.safetensors", "assets/aloha/norm_stats.json"]
    assert calls == []  # the index is not even fetched when the single file is there
    sharded = both - {"model.safetensors"}
    assert checkpoint_files(sharded, index, "r") == ["config.json", "model.safetensors.index.json", *SHARDS.values(),
                                                      "assets/aloha/norm_stats.json"]
    with pytest.raises(HubError, match="names shards the repo does not hold"):
        checkpoint_files(sharded - {SHARDS["b"]}, index, "r")
    with pytest.raises(HubError, match="neither model.safetensors nor"):
        checkpoint_files({"config.json", "README.md"}, index, "r")
    with pytest.raises(HubError, match="no config.json"):
        checkpoint_files({"model.safetensors"}, index, "r")


def test_both_layouts_in_one_repo_are_downloaded_once_and_shards_only_as_indexed(tmp_path):
    """A repo holding model.safetensors and the shards gets the single file only; a sharded repo gets its index
    and exactly the shards it names (a stray shard, the README and other files stay on the hub); then the same
    folder resolves offline, and loads (finetune.checkpoint.list_checkpoint_files picks what was fetched)."""
    import json

    from hub_helpers import FakeHub, hub_env, run_python

    hub = FakeHub()
    try:
        common = {"config.json": b"{}", "assets/aloha/norm_stats.json": b'{"norm_stats": {}}', "README.md": b"card",
                  "optimizer.pt": b"o" * 50,
                  "model.safetensors.index.json": json.dumps({"weight_map": SHARDS}).encode(),
                  **{name: name.encode() * 100 for name in SHARDS.values()}}
        hub.add_model("lab/both", {**common, "model.safetensors": b"w" * 5000})
        hub.add_model("lab/sharded", {**common, "model-00003-of-00003.safetensors": b"stray"})
        env = hub_env(hub, tmp_path / "hf")
        code = textwrap.dedent("""
            import sys
            from finetune.hub import download_folder
            seen = []
            for repo in ("lab/both", "lab/sharded"):
                print("DIR", repo, download_folder(repo, on_progress=lambda *a: seen.append(a)))
            print("LAST", seen[-1] if seen else None)
        """)
        proc = run_python(code, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert hub.downloaded("lab/both") == ["config.json", "model.safetensors", "assets/aloha/norm_stats.json"]
        assert sorted(hub.downloaded("lab/sharded")) == sorted(["config.json", "model.safetensors.index.json",
                                                                *SHARDS.values(), "assets/aloha/norm_stats.json"])
        total = sum(len(common[f]) for f in ["config.json", "model.safetensors.index.json", *SHARDS.values(),
                                             "assets/aloha/norm_stats.json"])
        assert f"LAST ('assets/aloha/norm_stats.json', {total}, {total})" in proc.stdout  # bytes over all files
        dirs = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("DIR"))
        from finetune.checkpoint import list_checkpoint_files

        assert [p.name for p in list_checkpoint_files(Path(dirs["lab/both"]))] == ["model.safetensors"]
        assert [p.name for p in list_checkpoint_files(Path(dirs["lab/sharded"]))] == sorted(SHARDS.values())
        n = len(hub.downloads)
        offline = run_python(code, hub_env(None, tmp_path / "hf", HF_HUB_OFFLINE="1"))
        assert offline.returncode == 0, offline.stderr[-3000:]
        assert offline.stdout.count("DIR") == 2 and all(f"DIR {r} {d}" in offline.stdout for r, d in dirs.items())
        assert len(hub.downloads) == n
    finally:
        hub.close()
