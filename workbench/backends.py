"""Rig builders, one per backend: the only place that knows how a RigConfig becomes arms, cameras and a clock.

`build_rig(config)` is the front ends' entry point (CLI, GUI, trials, benches); `workbench.rig` only defines the
Rig, so it never needs to know the backends.
"""
from __future__ import annotations

from typing import Callable

from drivers.clock import RealClock
from workbench.config import RigConfig
from workbench.rig import Rig


def _cameras(config: RigConfig) -> dict:
    from drivers.cameras.factory import make_camera

    return {c.name: make_camera(c.kind, name=c.name, width=c.width, height=c.height, fps=c.fps, **c.settings)
            for c in config.cameras}


def _arms(config: RigConfig, ports: dict[str, str] | None = None) -> tuple[dict, dict]:
    from drivers.dynamixel_arm import DynamixelArm, config_from_settings

    leaders, followers = {}, {}
    for a in config.arms:
        arm = DynamixelArm(config_from_settings(a.name, a.role, config.gripper, a.settings,
                                                port=None if ports is None else ports[a.name]))
        (leaders if a.role == "leader" else followers)[a.side] = arm
    return leaders, followers


def build_dynamixel(config: RigConfig) -> Rig:
    leaders, followers = _arms(config)
    return Rig(config, leaders, followers, _cameras(config), RealClock())


def build_virtual(config: RigConfig) -> Rig:
    """Start four emulated servo chains (own process) and point the real driver stack at their ptys."""
    from drivers.virtual import VirtualArm, VirtualRig

    emulators = VirtualRig(arms=[VirtualArm(a.name, a.role, a.settings.get("model", "vx300s" if a.role == "follower" else "wx250s"))
                                 for a in config.arms], gripper=config.gripper)
    ports = emulators.start()
    # emulated servos stand in for hardware, which never waits for the PC: just below the control loop's priority
    _prioritize_process(emulators.pid, max(config.rt_priority - 1, 0))
    try:
        leaders, followers = _arms(config, ports)
        rig = Rig(config, leaders, followers, _cameras(config), RealClock(), on_close=emulators.stop)
    except BaseException:
        emulators.stop()
        raise
    rig.emulators = emulators  # fault injection from tests, benches and the GUI's demo mode
    return rig


def _prioritize_process(pid: int, realtime: int, nice: int = -10) -> None:
    import os

    try:
        for tid in map(int, os.listdir(f"/proc/{pid}/task")):
            try:
                if realtime <= 0:
                    raise PermissionError
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(realtime))
            except PermissionError:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError):
        pass  # normal priority: fine on an idle machine


def build_sim(config: RigConfig) -> Rig:
    from drivers.sim.rig import build_sim_rig
    from drivers.sim.sim_camera import SimCamera

    s = config.sim
    sim_rig = build_sim_rig(task=s.task, seed=s.seed, camera_names=(), realtime=s.realtime, gripper=config.gripper)
    cameras = {c.name: SimCamera(sim_rig.sim, c.name, (c.height, c.width), c.settings.get("mujoco_camera"), c.fps)
               for c in config.cameras}
    return Rig(config, sim_rig.leaders, sim_rig.followers, cameras, sim_rig.clock, sim=sim_rig.sim,
               on_close=sim_rig.sim.close)  # frees the renderers (GL contexts) at disconnect, not at exit


BUILDERS: dict[str, Callable[[RigConfig], Rig]] = {
    "dynamixel": build_dynamixel,
    "virtual": build_virtual,
    "sim": build_sim,
}


def build_rig(config: RigConfig) -> Rig:
    """Instantiate (not connect) the rig a config describes."""
    return BUILDERS[config.backend](config)
