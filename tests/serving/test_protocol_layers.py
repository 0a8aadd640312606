"""The wire protocol and the robot side's client are torch-free and independent of training: importing them in a
fresh interpreter loads neither torch nor finetune (nor workbench, the layer above)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "finetune", "workbench")


def _loaded(*modules: str) -> dict[str, list[str]]:
    code = (f"import json, sys\nimport {', '.join(modules)}\n"
            f"print(json.dumps({{p: sorted(m for m in sys.modules if m == p or m.startswith(p + '.')) "
            f"for p in {FORBIDDEN!r}}}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_protocol_and_client_import_neither_torch_nor_finetune():
    loaded = _loaded("serving.protocol", "serving.client", "serving.chunks")
    assert loaded == {p: [] for p in FORBIDDEN}, loaded
