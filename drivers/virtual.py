"""A virtual ALOHA rig: four emulated servo chains on pseudo-terminals, served by a separate process.

The real driver stack (DynamixelArm -> dynamixel-sdk -> pty) talks to them exactly as to four U2D2 buses. The
emulator runs in its own process (multiprocessing, "spawn": safe next to Qt/torch threads) so servo emulation does
not compete with the control loop for the GIL. Arms start in the sleep pose. Leader chains get a scripted "hand":
once a leader gripper is let go (torque on -> off) it is squeezed below the ALOHA start threshold for ~1 s, then
opens and closes slowly; leader arm joints, once let go, swing in slow sinusoids around where they were released,
within their limits. So `workbench teleop --rig virtual` shows the followers tracking a moving leader.

    with VirtualRig() as rig:                       # or rig = VirtualRig(); rig.start(); ...; rig.stop()
        arms = {n: DynamixelArm(c) for n, c in rig.arm_configs().items()}
        rig.inject_hardware_error("follower_left", "gripper")   # overload, as on real grippers
        rig.grab("leader_left", "elbow", rad=0.8)                # an operator's hand (see the emulator's grab model)
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from drivers.arm import SLEEP_POSE, Role
from drivers.dynamixel import control_table as ct
from drivers.dynamixel.layout import SHADOW_PAIRS, default_layout
from drivers.errors import DriverError
from drivers.gripper import GRIPPER_PRESETS, GripperConstants


@dataclass(frozen=True)
class VirtualArm:
    name: str
    role: Role
    model: str
    # the gripper linkage's mechanical range (closed, open) as gripper joint rad; None = HARDWARE_GRIPPER's.
    # It belongs to the emulated hardware, not to the rig file: gripper calibration measures it.
    gripper_range: tuple[float, float] | None = None


# The emulated arms are ALOHA 1 hardware: their grippers' mechanical stops sit at these constants' open / closed
# gripper joint angles, whatever constants a rig file configures (wrong ones misbehave as on a real arm).
HARDWARE_GRIPPER = GRIPPER_PRESETS["aloha1"]


DEFAULT_ARMS: tuple[VirtualArm, ...] = (
    VirtualArm("leader_left", "leader", "wx250s"),
    VirtualArm("leader_right", "leader", "wx250s"),
    VirtualArm("follower_left", "follower", "vx300s"),
    VirtualArm("follower_right", "follower", "vx300s"),
)

# The emulator is a user-space process that shares the CPU with everything else: give it a patient reply timeout
# (a round trip is still as short as the pty allows; the timeout only matters when a reply is late).
VIRTUAL_DEFAULTS: dict[str, Any] = {"timeout_ms": 50.0}

# hand motion per leader joint: (amplitude rad, frequency Hz); distinct frequencies so the motion never repeats soon
_HAND = {"waist": (0.35, 0.11), "shoulder": (0.2, 0.17), "elbow": (0.25, 0.13), "forearm_roll": (0.3, 0.19),
         "wrist_angle": (0.3, 0.23), "wrist_rotate": (0.4, 0.29)}


def _chain_spec(arm: VirtualArm, gripper: GripperConstants, hand: bool) -> dict[str, Any]:
    """Picklable description of one chain (built into servos inside the emulator process)."""
    layout = default_layout(arm.model)
    joint_close = gripper.leader_joint_close if arm.role == "leader" else gripper.follower_joint_close
    joint_open = gripper.leader_joint_open if arm.role == "leader" else gripper.follower_joint_open
    pose = dict(zip(("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"), SLEEP_POSE))
    pose["gripper"] = joint_close + 0.3 * (joint_open - joint_close)
    hw = HARDWARE_GRIPPER
    g_close, g_open = arm.gripper_range or ((hw.leader_joint_close, hw.leader_joint_open) if arm.role == "leader"
                                            else (hw.follower_joint_close, hw.follower_joint_open))
    lo, hi = sorted((g_close / ct.RAD_PER_TICK + ct.CENTER_TICK, g_open / ct.RAD_PER_TICK + ct.CENTER_TICK))
    gripper_stops = (math.floor(lo), math.ceil(hi))  # outward: a goal rounded to a tick stays reachable
    servos = []
    for m in layout:
        if m.is_shadow:
            servos.append((m.id, m.model, ct.CENTER_TICK, None, None))  # coupled to its primary by the chain
            continue
        present = min(max(ct.rad_to_ticks(float(pose[m.name])), m.min_tick), m.max_tick)
        shaft = ct.shaft_from_present(present, m.reverse, 0)  # as it will read once drive modes are configured
        motion = None
        if hand and arm.role == "leader":
            if m.name == "gripper":
                squeeze = gripper.start_threshold - 0.5 * (gripper.start_threshold - joint_close)
                motion = dict(kind="squeeze", freq_hz=0.15, squeeze_s=1.2,
                              squeeze_to=ct.rad_to_ticks(squeeze),
                              open_to=ct.rad_to_ticks(joint_close + 0.9 * (joint_open - joint_close)))
            else:
                amp, freq = _HAND[m.name]
                motion = dict(kind="sine", amplitude=amp / ct.RAD_PER_TICK, freq_hz=freq)
        servos.append((m.id, m.model, shaft, motion, gripper_stops if m.name == "gripper" else None))
    return {"servos": servos, "couplings": dict(SHADOW_PAIRS)}


def _serve(conn, specs: list[dict[str, Any]], boot_time_s: float, linger_s: float = 0.0) -> None:
    """Emulator process entry point: build chains, report pty paths, serve until told to stop."""
    from drivers.dynamixel.emulator import EmulatorServer, HandMotion, Servo, ServoChain

    chains = []
    for spec in specs:
        servos = [Servo(i, model, shaft, HandMotion(**motion) if motion else None, boot_time_s, stops)
                  for i, model, shaft, motion, stops in spec["servos"]]
        chains.append(ServoChain(servos, spec["couplings"]))
    server = EmulatorServer(chains, linger_s=linger_s)
    conn.send(server.paths)
    try:
        server.serve(control=conn)
    finally:
        server.stop()


@contextlib.contextmanager
def _main_not_reimportable():
    """"spawn" re-runs the parent's main file in the child; a `python - <<EOF` or REPL parent has none (the
    emulator process needs nothing from it), so hide a non-existent main path while the child starts."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = path is not None and getattr(main, "__spec__", None) is None and not os.path.exists(path)
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


class VirtualRig:
    """Four (by default) emulated ALOHA arm chains in a child process; `paths` maps arm name -> pty path."""

    def __init__(self, arms: Sequence[VirtualArm] = DEFAULT_ARMS, gripper: GripperConstants = GRIPPER_PRESETS["aloha1"],
                 hand_motion: bool = True, boot_time_s: float = 0.02, linger_s: float = 0.0):
        self.arms = tuple(arms)
        self.gripper = gripper
        self.hand_motion = hand_motion
        self.boot_time_s = boot_time_s
        self.linger_s = linger_s  # emulator busy-polls this long after a packet; 0 = always block (best on 2 cores)
        self.paths: dict[str, str] = {}
        self._proc: mp.process.BaseProcess | None = None
        self._conn = None

    @property
    def pid(self) -> int | None:
        """The emulator process (for its CPU priority: it stands in for hardware that never waits for the PC)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 20.0) -> dict[str, str]:
        if self._proc is not None:
            return self.paths
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        specs = [_chain_spec(a, self.gripper, self.hand_motion) for a in self.arms]
        self._proc = ctx.Process(target=_serve, args=(child, specs, self.boot_time_s, self.linger_s),
                                 name="dxl-virtual-rig",
                                 daemon=True)
        with _main_not_reimportable():
            self._proc.start()
        child.close()
        if not parent.poll(timeout_s):
            self.stop()
            raise DriverError(f"virtual rig: the emulator process did not start within {timeout_s:.0f} s")
        self._conn = parent
        self.paths = dict(zip((a.name for a in self.arms), parent.recv()))
        return self.paths

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send("stop")
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=3.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=2.0)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
        self.paths = {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def __enter__(self) -> "VirtualRig":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- configs and fault injection ---------------------------------------------------------------------------
    def arm_configs(self, **overrides: Any) -> dict[str, Any]:
        """DynamixelArmConfig per arm, ports filled in (overrides apply to all arms, e.g. timeout_ms=20)."""
        from drivers.dynamixel_arm import DynamixelArmConfig

        if not self.paths:
            raise DriverError("virtual rig: start() it before asking for arm configs")
        overrides = {**VIRTUAL_DEFAULTS, **overrides}
        return {a.name: DynamixelArmConfig(name=a.name, role=a.role, port=self.paths[a.name], model=a.model,
                                           gripper=self.gripper, **overrides) for a in self.arms}

    def _call(self, name: str, arm: str, *args: Any, **kwargs: Any) -> Any:
        if self._conn is None:
            raise DriverError("virtual rig is not running")
        index = [a.name for a in self.arms].index(arm)
        self._conn.send((name, index, args, kwargs))
        status, value = self._conn.recv()
        if status != "ok":
            raise DriverError(f"virtual rig: {name} on {arm} failed: {value}")
        return value

    def _id(self, arm: str, joint: str | int) -> int:
        if isinstance(joint, int):
            return joint
        model = next(a.model for a in self.arms if a.name == arm)
        return next(m.id for m in default_layout(model) if m.name == joint)

    def inject_hardware_error(self, arm: str, joint: str | int = "gripper", bits: int = 0x20) -> None:
        """Shut a servo down as a real one does on overload (bits = Hardware Error Status; 0x20 = overload)."""
        self._call("inject_hardware_error", arm, self._id(arm, joint), bits)

    def inject_fault(self, arm: str, joint: str | int, kind: str, count: int | None = None,
                     delay_s: float = 0.05) -> None:
        """Make a servo's replies go missing ("no_reply"), corrupt ("corrupt_crc") or late ("late")."""
        self._call("inject_fault", arm, self._id(arm, joint), kind, count, delay_s)

    def clear_faults(self, arm: str) -> None:
        self._call("clear_faults", arm)

    def grab(self, arm: str, joint: str | int, ticks: float | None = None, *, rad: float | None = None,
             normalized: float | None = None, speed_ticks_s: float | None = None) -> None:
        """An operator's hand takes hold of a joint and pulls it toward a position, given as Present Position
        `ticks`, as `rad` (what DynamixelArm reads for that joint; for the gripper its joint angle) or, for the
        gripper, as the `normalized` ALOHA gripper value. The hand moves the joint only when the servo is weak
        enough (torque off, or a low Goal Current / Goal PWM: see drivers.dynamixel.emulator); it holds on until
        release_grab()."""
        from drivers.dynamixel.emulator import GRAB_SPEED_TICKS_S

        given = [v is not None for v in (ticks, rad, normalized)]
        if sum(given) != 1:
            raise ValueError("grab: give exactly one of ticks, rad, normalized")
        if normalized is not None:
            if joint not in ("gripper", self._id(arm, "gripper")):
                raise ValueError("grab: `normalized` is for the gripper")
            role = next(a.role for a in self.arms if a.name == arm)
            g = self.gripper
            rad = (g.normalized_to_leader_joint(normalized) if role == "leader"
                   else g.normalized_to_follower_joint(normalized))
        if rad is not None:
            ticks = rad / ct.RAD_PER_TICK + ct.CENTER_TICK
        self._call("grab", arm, self._id(arm, joint), float(ticks),
                   GRAB_SPEED_TICKS_S if speed_ticks_s is None else float(speed_ticks_s))

    def release_grab(self, arm: str, joint: str | int) -> None:
        """The hand lets go of the joint (a servo with torque returns to its goal, a torque-off one stays)."""
        self._call("release_grab", arm, self._id(arm, joint))


def virtual_arm_configs(rig: VirtualRig, settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Configs from rig-file arm settings (port omitted; the rig assigns it)."""
    from drivers.dynamixel_arm import config_from_settings

    settings = settings or {}
    return {a.name: config_from_settings(a.name, a.role, rig.gripper,
                                         {"model": a.model, **VIRTUAL_DEFAULTS, **settings.get(a.name, {})},
                                         port=rig.paths[a.name]) for a in rig.arms}
