"""Load Triton's LLVM before Mesa's: without it, rendering the sim and then using torch crashes the interpreter.

The crash (issue 9): Mesa renders MuJoCo's offscreen images with llvmpipe, i.e. with the system's
libLLVM-NN.so, and loads it into the *global* symbol scope (PyOpenGL opens libOSMesa with RTLD_GLOBAL already at
`import mujoco` when MUJOCO_GL=osmesa; Mesa's EGL opens its DRI driver with RTLD_GLOBAL at the first EGL context).
Triton (shipped with the default CUDA build of torch, imported by torch on first use of torch.compile/inductor and
by some checks) bundles its own, different LLVM inside `triton/_C/libtriton.so` and exports those C++ symbols
with default visibility (65k `llvm::` symbols). When libtriton.so is loaded *after* Mesa's LLVM is global, the
dynamic linker binds part of libtriton's LLVM to Mesa's copy and libtriton's static constructors (LLVM's
DebugCounter / cl::opt registries in PassBuilder.cpp) run against another LLVM's objects: SIGSEGV inside
`dlopen`, no Python traceback. Loaded in the other order it is harmless: Python and ctypes open extension
modules RTLD_LOCAL, so libtriton's symbols never enter the global scope and Mesa's LLVM, loaded later, binds to
its own.

The fix, and why this one: guarantee the safe order in every process that can do both, by dlopen-ing
libtriton.so (when Triton is installed) before anything loads Mesa. `drivers.sim` is the only place this code base
imports `mujoco`, so `drivers/sim/__init__.py` calls `preload_triton()` before it; that covers the GUI (Qt's
widgets do not load Mesa; checked on Xvfb), the CLI and the tests, whatever they import first. Keeping MuJoCo
rendering and torch in separate processes would also avoid it, but simulated deployment runs the policy on the
images the control loop renders each tick, in the same process, and a render process would add a copy and IPC
latency to every frame of a 50 Hz loop; the preload costs one dlopen at start-up instead.

Cost (measured, triton 3.8.0, warm page cache): ~20 ms and +78 MiB RSS of which 74 MiB are clean file-backed
pages and 3 MiB private dirty; `import triton` would be ~110 ms. A process that later imports triton (anything
using torch.compile on CUDA) pays this anyway. Without Triton installed (the CPU torch build) it is one
`importlib.util.find_spec` (<1 ms).

If Mesa's LLVM is already loaded when this runs (a program imported `mujoco` or another Mesa user before
`drivers.sim`), libtriton.so is loaded with RTLD_DEEPBIND instead, which makes it bind to its own LLVM first
(tested: import, render, full Triton compile to cubin), and a warning says so. `WORKBENCH_TRITON_PRELOAD=0`
turns the preload off (the tests use it to show the crash it prevents).
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DISABLE_ENV = "WORKBENCH_TRITON_PRELOAD"
_handle: ctypes.CDLL | None = None  # kept for the life of the process: the library must stay loaded
_state: str | None = None


def triton_library() -> Path | None:
    """Path of Triton's libtriton.so if Triton is installed (found without importing triton), else None."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        lib = Path(folder) / "_C" / "libtriton.so"
        if lib.is_file():
            return lib
    return None


def foreign_llvm_loaded() -> list[str]:
    """Shared LLVM libraries (Mesa's libLLVM-NN.so and the like) already mapped into this process."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "/libLLVM" in line})
    except OSError:
        return []


def preload_triton() -> str:
    """Load libtriton.so now if Triton is installed and not loaded yet. Idempotent; returns what happened:
    'loaded' (now, before any Mesa LLVM), 'deepbind' (Mesa's LLVM was already there), 'already' (triton was
    imported before), 'absent' (no Triton), 'disabled' (WORKBENCH_TRITON_PRELOAD=0), 'unsupported' (not Linux),
    'failed' (dlopen refused it: a broken install; importing triton would fail the same way)."""
    global _handle, _state
    if _state is not None:
        return _state
    if not sys.platform.startswith("linux"):
        _state = "unsupported"  # Triton's wheels and Mesa's RTLD_GLOBAL loading are Linux matters
    elif os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        _state = "disabled"
    elif "triton._C.libtriton" in sys.modules:
        _state = "already"
    elif (lib := triton_library()) is None:
        _state = "absent"
    else:
        mode = os.RTLD_NOW | os.RTLD_LOCAL  # what Python's own import of the extension module uses
        late = foreign_llvm_loaded()
        if late:
            mode |= os.RTLD_DEEPBIND
            log.warning("%s is loaded before Triton: loading Triton with RTLD_DEEPBIND so that it keeps its own "
                        "LLVM. Import drivers.sim before mujoco (or anything that renders through Mesa).",
                        ", ".join(Path(p).name for p in late))
        try:
            _handle = ctypes.CDLL(str(lib), mode=mode)
        except OSError as exc:
            log.warning("could not preload %s (%s); importing triton later may fail", lib, exc)
            _state = "failed"
        else:
            _state = "deepbind" if late else "loaded"
    return _state
