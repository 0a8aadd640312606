"""The simulated ALOHA rig: gym-aloha's bimanual ViperX MuJoCo model behind the workbench's driver contracts.

Importing this package first picks MuJoCo's OpenGL backend, because `mujoco` reads `MUJOCO_GL` once, when it is
first imported: an explicit `MUJOCO_GL` wins; otherwise EGL when a GPU EGL device is usable, else OSMesa
(software; works on any Linux box with libOSMesa, and EGL without a GPU fails). Import `drivers.sim` before
anything else imports `mujoco` (dm_control, a viewer) or the choice cannot take effect.

It also loads Triton's LLVM (when Triton is installed) before `mujoco` can load Mesa's: the other order makes the
first `import triton` (torch does it) crash the interpreter; see `drivers.sim.llvm_order`.
"""
from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

_EGL_PROBE = (
    "import os; os.environ['MUJOCO_GL'] = 'egl'; import mujoco; "
    "c = mujoco.GLContext(8, 8); c.make_current(); c.free()"
)


def _egl_gpu_usable() -> bool:
    """True when a GPU device node exists and an EGL context can really be made (probed in a subprocess,
    because a failed EGL init inside this process would poison the later OSMesa fallback)."""
    if not (glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*")):
        return False
    try:
        done = subprocess.run([sys.executable, "-c", _EGL_PROBE], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def choose_gl_backend() -> str:
    """Set `MUJOCO_GL` (and nothing else) unless the user already did; returns the backend in effect."""
    explicit = os.environ.get("MUJOCO_GL")
    if explicit:
        return explicit
    if "mujoco" in sys.modules:
        log.warning("mujoco was imported before drivers.sim; its default GL backend stays in effect "
                    "(set MUJOCO_GL=egl or osmesa before starting the program)")
        return "default"
    if sys.platform.startswith("linux"):
        os.environ["MUJOCO_GL"] = "egl" if _egl_gpu_usable() else "osmesa"
        return os.environ["MUJOCO_GL"]
    return "default"  # macOS (CGL) / Windows (WGL): mujoco's own default is right


from drivers.sim.llvm_order import preload_triton  # noqa: E402 - stdlib only, must run before mujoco loads

TRITON_PRELOAD = preload_triton()
GL_BACKEND = choose_gl_backend()

# Everything below imports mujoco, so it must stay after the backend choice.
from drivers.sim.aloha_sim import AlohaSim, TASKS, TaskSpec  # noqa: E402
from drivers.sim.demonstrator import JointTrajectory, PHASES, plan_demo  # noqa: E402
from drivers.sim.rig import SimRig, build_sim_rig  # noqa: E402
from drivers.sim.scripted_leader import ScriptedDemo, ScriptedLeader  # noqa: E402
from drivers.sim.sim_arm import SimArm  # noqa: E402
from drivers.sim.sim_camera import CAMERA_MAP, SimCamera  # noqa: E402
from drivers.sim.sim_clock import SimClock  # noqa: E402

__all__ = [
    "GL_BACKEND", "choose_gl_backend", "AlohaSim", "TASKS", "TaskSpec", "JointTrajectory", "PHASES", "plan_demo",
    "SimRig", "build_sim_rig", "ScriptedDemo", "ScriptedLeader", "SimArm", "CAMERA_MAP", "SimCamera", "SimClock",
]
