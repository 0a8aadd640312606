"""The fake hub (tests/recorder/fake_hub.py) set up as the model hub training downloads from (not a test module):
repos in the layouts the hub has today, and the environment that points huggingface-hub at it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tokenizer_helpers import paligemma_like_tokenizer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.recorder.fake_hub import FakeHub  # noqa: E402

_STANDIN: dict[str, Path] = {}


def standin_tokenizer() -> Path:
    """tokenizer_helpers.paligemma_like_tokenizer, built once per test session."""
    if "path" not in _STANDIN:
        _STANDIN["path"] = paligemma_like_tokenizer(Path(tempfile.mkdtemp(prefix="paligemma_like_")) /
                                                    "tokenizer.model")
    return _STANDIN["path"]


def host_tokenizer_sources(hub: FakeHub, *, pinned: bool = True, gated: bool = False,
                           pinned_file: bytes | None = None) -> None:
    """lerobot/pi0 as it is today: main in LeRobot's processor layout (no tokenizer.model); with `pinned` the old
    commit the default source names, holding `pinned_file` (default: the stand-in); with `gated` the gated
    google/paligemma-3b-pt-224 holding the stand-in."""
    from finetune.tokenizer import DEFAULT_TOKENIZER_REVISION, GATED_TOKENIZER_SOURCE

    tok = standin_tokenizer().read_bytes()
    hub.add_model("lerobot/pi0", {"config.json": b'{"type": "pi0"}', "policy_preprocessor.json": b"{}",
                                  "model.safetensors": b"not fetched"})
    if pinned:
        hub.add_model("lerobot/pi0", {"config.json": b"{}", "tokenizer.model": pinned_file or tok}, branch=None,
                      commit=DEFAULT_TOKENIZER_REVISION)
    if gated:
        hub.add_model(GATED_TOKENIZER_SOURCE, {"config.json": b"{}", "tokenizer.model": tok}, gated=True)


def hub_env(hub: FakeHub | None, hf_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process using `hub` (None: an endpoint nobody listens on) and `hf_home`."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT),
           "HF_ENDPOINT": hub.endpoint if hub is not None else "http://127.0.0.1:9", "OMP_NUM_THREADS": "1",
           **extra}
    for k in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_TOKEN"):
        if k not in extra:
            env.pop(k, None)
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def workbench(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def tiny_base_files(folder: Path) -> dict[str, bytes]:
    """A real pi0_tiny checkpoint in the hub layout (finetune.checkpoint.save_pi0), as repo files."""
    sys.path.insert(0, str(ROOT / "tests" / "finetune"))
    from pi0_helpers import tiny_model

    from finetune.checkpoint import save_pi0

    save_pi0(tiny_model(), folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def full_size_config() -> bytes:
    from finetune.model_config import Pi0Config

    return json.dumps(Pi0Config.variant("pi0").to_dict()).encode()
