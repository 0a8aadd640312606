"""Rendering the sim, then importing Triton in the same process (issue 9): Mesa's LLVM must not capture Triton's.

Each case runs in a child interpreter, because the failure is a SIGSEGV inside `dlopen` that would take pytest
down with it. The child renders a frame of the ALOHA sim through drivers.sim (Mesa: OSMesa or EGL/llvmpipe), then
does what torch does on first use of the compiler stack (`torch.utils._triton.has_triton_package()`, i.e.
`import triton`), then compiles a small Triton kernel down to a cubin (no GPU needed) so that Triton's own LLVM
really runs after Mesa's, and renders again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.sim.llvm_order import DISABLE_ENV, triton_library

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Triton wheels and Mesa llvmpipe: Linux only"),
    pytest.mark.skipif(triton_library() is None,
                       reason="Triton is not installed (CPU torch build): the Mesa/Triton LLVM clash cannot occur"),
]

CHILD = textwrap.dedent("""
    import os, sys
    if os.environ.get("IMPORT_MUJOCO_FIRST") == "1":
        import mujoco  # a program that loads Mesa (OSMesa) before drivers.sim had a say
    from drivers.sim import AlohaSim, TRITON_PRELOAD
    print("preload:", TRITON_PRELOAD, flush=True)
    sim = AlohaSim("transfer_cube", seed=0)
    image, _ = sim.render("top", 48, 64)
    assert image.std() > 5, "blank render"
    maps = open("/proc/self/maps").read()
    print("rendered; Mesa LLVM mapped:", "/libLLVM" in maps, flush=True)

    try:
        import torch.utils._triton as tt
    except ImportError:  # triton without torch: import it the same way
        import triton  # noqa: F401
    else:
        assert tt.has_triton_package()
    import triton, triton.language as tl
    print("imported triton", triton.__version__, flush=True)

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    @triton.jit
    def double(x, y, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(y + i, tl.load(x + i) * 2)

    src = ASTSource(fn=double, signature={"x": "*fp32", "y": "*fp32", "N": "constexpr"}, constexprs={"N": 64})
    kernel = triton.compile(src, target=GPUTarget("cuda", 80, 32))
    assert "ld.global" in kernel.asm["ptx"] and kernel.asm["cubin"]
    print("compiled", flush=True)
    again, _ = sim.render("angle", 48, 64)
    assert again.std() > 5
    print("CHILD OK", flush=True)
""")


def run_child(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=str(tmp_path / "triton-cache"),
                PYTHONFAULTHANDLER="1", **env)
    full["PYOPENGL_PLATFORM"] = full["MUJOCO_GL"]  # `import mujoco` in this process set it to our backend
    script = tmp_path / "child.py"  # a file, not -c: @triton.jit reads the kernel's source
    script.write_text(CHILD)
    return subprocess.run([sys.executable, str(script)], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=240)


def describe(p: subprocess.CompletedProcess) -> str:
    return f"exit status {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr[-4000:]}"


@pytest.mark.parametrize("gl", ["osmesa", "egl"])
def test_render_then_triton_survives(tmp_path, gl):
    p = run_child(tmp_path, MUJOCO_GL=gl)
    if gl == "egl" and p.returncode != 0 and "preload: loaded" in p.stdout and "rendered" not in p.stdout:
        pytest.skip(f"no usable EGL display here:\n{describe(p)}")
    assert p.returncode == 0 and "CHILD OK" in p.stdout, describe(p)
    assert "preload: loaded" in p.stdout, describe(p)


def test_mujoco_imported_first_still_survives(tmp_path):
    """A program that imports mujoco before drivers.sim (OSMesa: Mesa's LLVM is loaded at `import mujoco`):
    Triton is then loaded with RTLD_DEEPBIND and a warning is logged."""
    p = run_child(tmp_path, MUJOCO_GL="osmesa", IMPORT_MUJOCO_FIRST="1")
    assert p.returncode == 0 and "CHILD OK" in p.stdout, describe(p)
    assert "preload: deepbind" in p.stdout, describe(p)


def test_without_the_preload_the_child_crashes(tmp_path):
    """The hazard the tests above guard against, shown on this machine: the same child with the preload turned
    off dies of SIGSEGV. Where Mesa does not render with LLVM (a GPU EGL driver) there is nothing to show."""
    p = run_child(tmp_path, MUJOCO_GL="osmesa", **{DISABLE_ENV: "0"})
    if "Mesa LLVM mapped: True" not in p.stdout:
        pytest.skip(f"this machine's GL does not load Mesa's LLVM, so the crash cannot happen here:\n{describe(p)}")
    assert p.returncode == -signal.SIGSEGV, describe(p)
    assert "imported triton" not in p.stdout
