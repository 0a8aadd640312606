"""Fresh-machine set-up behind the README's two commands (stdlib only: it runs before anything is installed).

    python3 -m workbench.bootstrap app    # install, then open the app (simulated rig unless hardware is configured)
    python3 -m workbench.bootstrap test   # install with test extras, then run the test suite

System libraries (libusb for RealSense, Mesa for MuJoCo rendering, Xvfb and Qt's xcb libraries) are installed
with apt-get when missing and we are root or have sudo; otherwise the exact command to run is printed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APT_PACKAGES = [
    "libusb-1.0-0",  # pyrealsense2
    "libosmesa6", "libgl1", "libegl1", "libgl1-mesa-dri",  # MuJoCo offscreen rendering (osmesa/egl)
    "xvfb", "xauth",  # a virtual display for screenshots and display-less GUI runs
    "libxkbcommon-x11-0", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-shape0",
    "libxcb-xinerama0", "libxcb-randr0", "libxcb-render-util0", "libxcb-image0", "libfontconfig1",
    "libdbus-1-3", "fonts-dejavu-core",  # Qt 6 xcb platform plugin
    "openssh-client", "rsync",  # workbench train --host
]
# only the tests need a server: an operator's PC never gets an sshd from the app's set-up
# the loopback sshd of the `train --host` test; a single-node SLURM (and its munge) for the `train --slurm` tests
TEST_APT_PACKAGES = ["openssh-server", "slurmctld", "slurmd", "slurm-client", "munge"]
TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "tests"]


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, **kw)


def missing_apt_packages(packages: list[str] | None = None) -> list[str]:
    if not shutil.which("dpkg-query"):
        return []
    missing = []
    for pkg in APT_PACKAGES if packages is None else packages:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in out.stdout:
            missing.append(pkg)
    return missing


def install_system_packages(packages: list[str] | None = None) -> None:
    missing = missing_apt_packages(packages)
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        print(f"warning: missing system packages {' '.join(missing)}; install them with your package manager "
              f"(Debian/Ubuntu: sudo apt-get install {' '.join(missing)})", file=sys.stderr)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(prefix + ["apt-get", "update", "-qq"], env=env)
    if _run(prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env) != 0:
        sys.exit("error: apt-get could not install the system packages above")


def install_python(extras: str = "") -> None:
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    if _run([sys.executable, "-m", "pip", "install", "-q", "-e", target]) != 0:
        sys.exit("error: pip install failed (see above)")


def report_torch_build() -> None:
    """One line naming the torch build pip chose (the default is the CUDA one, with Triton): CPU and CUDA builds
    behave differently in places (Triton and Mesa, drivers/sim/llvm_order.py), so a test log should say which."""
    probe = ("import importlib.metadata as m\n"
             "def v(n):\n"
             "    try: return m.version(n)\n"
             "    except m.PackageNotFoundError: return None\n"
             "t, tr = v('torch'), v('triton')\n"
             "print('torch', t, '(CPU build)' if t and '+cpu' in t else '', '| triton', tr or 'not installed')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if out.returncode == 0:
        print(" ".join(out.stdout.split()), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode = argv[0] if argv else "app"
    if mode not in ("app", "test"):
        sys.exit("usage: python3 -m workbench.bootstrap [app|test] [extra args]")
    install_system_packages(APT_PACKAGES + (TEST_APT_PACKAGES if mode == "test" else []))
    install_python("test" if mode == "test" else "")
    if mode == "test":
        # openpi's client pins numpy<2 (its code runs on NumPy 2): installed without its pins for the serving tests
        if _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "openpi-client>=0.1"]) != 0:
            sys.exit("error: pip could not install openpi-client (see above)")
        report_torch_build()
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        return _run(TEST_COMMAND + argv[1:], cwd=ROOT, env=env)
    # The entry point of *this* interpreter's environment: `shutil.which` would find whichever `workbench` is
    # first on PATH (another venv's, a pyenv shim), e.g. when this ran as /path/to/venv/bin/python unactivated.
    script = Path(sys.executable).parent / "workbench"
    workbench = [str(script)] if script.is_file() else [sys.executable, "-m", "workbench.cli"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return _run([*workbench, *argv[1:]])
    print("No display: running a headless teleoperation on the simulated rig instead of the window.\n"
          "(On a desktop, `workbench` opens the app; `xvfb-run workbench` runs it on a virtual screen.)", flush=True)
    return _run([*workbench, "teleop", "--rig", "sim-transfer-cube", "--steps", "400", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
