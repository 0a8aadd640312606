"""The set-up steps in order, shared by `workbench rig detect / calibrate` and the Rig tab's wizard:

    detect() -> Detection                      adapters, buses (leader / follower), cameras
    SetupSession.arm_watch(role)               "move the left leader": the bus whose positions changed is left
    SetupSession.camera_watch()                "wave in front of cam_high": the image that changed is cam_high
    SetupSession.plan()                        the proposed rig file (stable paths)
    calibration_rig(plan) + gripper_calibration  measured [gripper] constants
    save(plan, path), teleop_check(path)       the rig file, and a short teleop run on it (TrackingMeter judges it)

EmulatedOperator is the virtual rig for a set-up run; watch_wave the "wave in front of it" watch.

The UI only asks and shows; nothing here prints or waits for a key.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from drivers.arm import SIDES
from workbench.rig_setup.assign import ARM_MOVE_MIN_RAD, CLEAR_RATIO, IMAGE_CHANGE_MIN, arm_motion, pick_changed
from workbench.rig_setup.buses import BusReport, PositionReader, scan_bus
from workbench.rig_setup.cameras import DetectedCamera, list_realsense, list_v4l2
from workbench.rig_setup.rig_file import CAMERA_NAMES, ArmPlan, CameraPlan, RigPlan
from workbench.rig_setup.serial_ports import SerialAdapter, list_serial_adapters

VIRTUAL_ARM_SETTINGS = {"timeout_ms": 50.0}  # as the virtual preset: emulated servos share the PC's CPU


@dataclass
class Detection:
    adapters: list[SerialAdapter]
    buses: list[BusReport]  # one per adapter, same order
    cameras: list[DetectedCamera]
    notes: list[str] = field(default_factory=list)  # what could not be listed, and why

    def by_role(self, role: str) -> list[tuple[SerialAdapter, BusReport]]:
        return [(a, b) for a, b in zip(self.adapters, self.buses) if b.role == role]

    def problems(self) -> list[str]:
        """What stops a complete ALOHA rig file from being proposed."""
        out = []
        for role, model in (("leader", "wx250s"), ("follower", "vx300s")):
            n = len(self.by_role(role))
            if role == "follower" and n != 2 or role == "leader" and n not in (0, 2):
                out.append(f"found {n} {role} arm bus{'es' if n != 1 else ''} ({model}); an ALOHA has 2"
                           + ("" if role == "follower" else " (or none: a deployment-only rig)"))
        for a, b in zip(self.adapters, self.buses):
            if b.problems or b.error or (b.found and b.model is None):
                out.append(b.describe())
        return out

    def lines(self) -> list[str]:
        from workbench.rig_setup import cameras as cam_mod, serial_ports

        out = ["Serial adapters:"]
        out += [f"  {a.describe()}" for a in self.adapters] or [f"  {serial_ports.NOTHING_FOUND}"]
        if self.adapters:
            out.append("Dynamixel buses:")
            for b in self.buses:
                out += [f"  {line}" for line in b.describe().splitlines()]
        out.append("Cameras:")
        out += [f"  {c.describe()}" for c in self.cameras] or [f"  {cam_mod.NOTHING_FOUND}"]
        out += [f"  note: {n}" for n in self.notes]
        return out


def detect(candidates: tuple[str, ...] = (), camera_candidates: tuple[str, ...] = (), *,
           timeout_ms: float = 10.0, progress: Callable[[str], None] = lambda s: None) -> Detection:
    adapters = list_serial_adapters(candidates)
    buses = []
    for a in adapters:
        progress(f"Pinging servos on {a.device}")
        buses.append(scan_bus(a.device, timeout_ms=timeout_ms))
    progress("Listing cameras")
    realsense, note = list_realsense()
    return Detection(adapters, buses, realsense + list_v4l2(camera_candidates), [note] if note else [])


class ArmWatch:
    """The buses of one role opened read-only; `changes()` is each one's joint excursion since `baseline()`."""

    def __init__(self, ports: list[str], model: str, timeout_ms: float = 10.0):
        self.readers = {p: PositionReader(p, model, timeout_ms=timeout_ms) for p in ports}
        self._base: dict[str, np.ndarray] = {}
        self._samples: dict[str, list[np.ndarray]] = {p: [] for p in ports}

    def __enter__(self) -> "ArmWatch":
        for r in self.readers.values():
            r.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for r in self.readers.values():
            r.__exit__()

    def baseline(self) -> None:
        self._base = {p: r.read() for p, r in self.readers.items()}
        self._samples = {p: [] for p in self.readers}

    def sample(self) -> dict[str, float]:
        for p, r in self.readers.items():
            self._samples[p].append(r.read())
        return self.changes()

    def changes(self) -> dict[str, float]:
        return {p: arm_motion(self._base[p], self._samples[p]) for p in self.readers}

    def watch(self, seconds: float, hz: float = 20.0, until_moved: bool = True,
              should_stop: Callable[[], bool] = lambda: False,
              on_sample: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
        """Sample for up to `seconds` (sooner once one bus moved clearly, or `should_stop()`); `on_sample` gets
        each sample's changes (the wizard shows them live)."""
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and not should_stop():
            ch = self.sample()
            if on_sample is not None:
                on_sample(ch)
            if until_moved and max(ch.values()) >= 2 * ARM_MOVE_MIN_RAD:
                break
            time.sleep(1.0 / hz)
        return self.changes()


class SetupSession:
    """What the operator has told us so far; `plan()` turns it into a rig file."""

    def __init__(self, detection: Detection, backend: str = "dynamixel", name: str = "aloha"):
        self.detection = detection
        self.backend = backend
        self.name = name
        self.sides: dict[str, str] = {}  # port -> side
        self.camera_names: dict[str, str] = {}  # camera ident -> name (cam_high ...)
        self.virtual_names: dict[str, str] = {}  # virtual rig: port -> its emulated arm's name

    def ports(self, role: str) -> list[str]:
        return [a.device for a, _ in self.detection.by_role(role)]

    def arm_watch(self, role: str, timeout_ms: float = 10.0) -> ArmWatch:
        model = "wx250s" if role == "leader" else "vx300s"
        return ArmWatch(self.ports(role), model, timeout_ms=timeout_ms)

    def assign_moved(self, role: str, side: str, changes: dict[str, float]) -> str:
        """The bus that moved is `side`; with two buses of the role the other is the other side."""
        port = pick_changed(changes, ARM_MOVE_MIN_RAD, f"{role} arm",
                            f"move the {side} {role} arm by hand (a joint by a few centimetres)")
        self.sides[port] = side
        others = [p for p in self.ports(role) if p != port]
        if len(others) == 1:
            self.sides[others[0]] = next(s for s in SIDES if s != side)
        return port

    def unnamed_cameras(self) -> list[DetectedCamera]:
        return [c for c in self.detection.cameras if c.ident not in self.camera_names]

    def assign_changed_camera(self, name: str, changes: dict[str, float]) -> str:
        pool = {k: v for k, v in changes.items() if k not in self.camera_names}
        ident = pick_changed(pool, IMAGE_CHANGE_MIN, "camera image", f"wave a hand close in front of {name}")
        self.camera_names[ident] = name
        return ident

    def next_camera_name(self) -> str | None:
        """The name the next "wave in front of it" step asks for (CAMERA_NAMES in order), None when all are named."""
        left = len(self.unnamed_cameras())
        if not left:
            return None
        return CAMERA_NAMES[len(self.camera_names)] if len(self.camera_names) < len(CAMERA_NAMES) else None

    def name_last_camera(self) -> str | None:
        """With one camera left unnamed it needs no wave: it gets the next name. Returns its ident, or None."""
        cams, name = self.unnamed_cameras(), self.next_camera_name()
        if len(cams) != 1 or name is None:
            return None
        self.name_camera(cams[0].ident, name)
        return cams[0].ident

    def name_camera(self, ident: str, name: str) -> None:
        if name not in CAMERA_NAMES:
            raise ValueError(f"camera name {name!r}: one of {', '.join(CAMERA_NAMES)}")
        self.camera_names[ident] = name

    def plan(self, gripper="aloha1", extra_cameras: tuple[CameraPlan, ...] = ()) -> RigPlan:
        arms = []
        missing = [f"{role} on {p}" for role in ("leader", "follower") for p in self.ports(role) if p not in self.sides]
        if missing:
            raise ValueError(f"left / right not assigned yet for: {', '.join(missing)} (the 'move one arm' step)")
        adapters = {a.device: a for a in self.detection.adapters}
        for role in ("leader", "follower"):
            for port in self.ports(role):
                side = self.sides[port]
                settings = dict(VIRTUAL_ARM_SETTINGS) if self.backend == "virtual" else {}
                if role == "follower":
                    settings["gripper_current_limit"] = 300
                arms.append(ArmPlan(f"{role}_{side}", role, side, "wx250s" if role == "leader" else "vx300s",
                                    None if self.backend == "virtual" else adapters[port].stable_path, settings))
        by_ident = {c.ident: c for c in self.detection.cameras}
        cams = tuple(CameraPlan(n, by_ident[i].kind, by_ident[i].settings,
                                fps=60 if by_ident[i].kind == "realsense" else 30)
                     for i, n in sorted(self.camera_names.items(), key=lambda kv: CAMERA_NAMES.index(kv[1])))
        notes = ["proposed by `workbench rig detect`; device paths are stable (by-id) names",
                 "after `workbench rig udev` you may use /dev/ttyDXL_* and /dev/CAM_* instead"]
        return RigPlan(self.name, self.backend, tuple(sorted(arms, key=lambda a: a.name)), cams + extra_cameras,
                       gripper, notes=tuple(notes))


def watch_wave(watch, seconds: float, *, hz: float = 10.0, exclude: tuple[str, ...] = (),
               should_stop: Callable[[], bool] = lambda: False,
               on_sample: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Each camera's largest image change (cameras.CameraWatch, from its baseline) over up to `seconds`; ends
    early once one camera (not in `exclude`: already named) changed clearly more than the others."""
    best: dict[str, float] = {}
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and not should_stop():
        for k, v in watch.changes().items():
            best[k] = max(best.get(k, 0.0), v)
        if on_sample is not None:
            on_sample(dict(best))
        pool = sorted((v for k, v in best.items() if k not in exclude), reverse=True)
        if pool and pool[0] >= 2 * IMAGE_CHANGE_MIN and (len(pool) == 1 or pool[0] > 2 * CLEAR_RATIO * pool[1]):
            break
        time.sleep(1.0 / hz)
    return best


class EmulatedOperator:
    """The virtual rig for a set-up run (`rig detect --virtual`, the wizard's "virtual rig"): four emulated
    chains on pseudo-terminals, and an operator who moves the arm a step asks for."""

    CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")

    def __init__(self):
        from drivers.virtual import VirtualRig

        self.rig = VirtualRig(hand_motion=False)

    def start(self) -> tuple[str, ...]:
        """The chains' ports: the candidates detection pings."""
        return tuple(self.rig.start().values())

    def stop(self) -> None:
        self.rig.stop()

    def arm_at(self, port: str) -> str | None:
        """The emulated arm's name behind a port (what the operator sees labelled on the virtual rig)."""
        return next((n for n, p in self.rig.paths.items() if p == port), None)

    @contextmanager
    def moving(self, role: str, side: str = "left", joint: str = "waist", rad: float = 0.6):
        """The operator's hand moves one joint of `<role>_<side>` while the block runs, then lets go."""
        arm = f"{role}_{side}"
        self.rig.grab(arm, joint, rad=rad)
        try:
            yield
        finally:
            self.rig.release_grab(arm, joint)

    def camera_plans(self) -> tuple[CameraPlan, ...]:
        """The virtual rig has no cameras to wave at: synthetic ones, as the `virtual` preset."""
        return tuple(CameraPlan(n, "synthetic", {"seed": i}, fps=50) for i, n in enumerate(self.CAMERAS))


def calibration_plan(plan: RigPlan) -> RigPlan:
    """The rig a gripper calibration runs on: the plan with a wider gripper search range (see widened)."""
    from workbench.rig_setup.gripper_calibration import widened
    from workbench.rig_setup.rig_file import gripper_of

    return plan.with_gripper(widened(gripper_of(plan)))


def save(plan: RigPlan, path: str | Path, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another name, or overwrite it (--force)")
    text = plan.to_toml()
    plan.config(str(path))  # refuse before writing
    path.write_text(text)
    return path


@dataclass(frozen=True)
class TeleopCheck:
    ticks: int
    median_error: float  # rad, follower vs leader arm joints, after the first fifth
    max_error: float
    ok: bool

    def describe(self) -> str:
        verdict = "OK" if self.ok else "FOLLOWERS DID NOT TRACK"
        return (f"teleop check {verdict}: {self.ticks} ticks, follower-vs-leader error median "
                f"{self.median_error:.3f} rad, max {self.max_error:.3f} rad")


class TrackingMeter:
    """A tick listener (control thread): each tick's largest follower-vs-leader arm joint error. The CLI's
    teleop check and the wizard's (a teleop through the app's RigController) judge a new rig by it."""

    def __init__(self):
        from drivers.arm import ARM_JOINT_COLUMNS

        self.cols = list(ARM_JOINT_COLUMNS)
        self.errors: list[float] = []

    def __call__(self, tick) -> None:
        self.errors.append(float(np.max(np.abs(tick.qpos - tick.action)[self.cols])))

    def result(self, max_median_error: float = 0.2) -> TeleopCheck:
        errors = list(self.errors)
        if not errors:
            raise RuntimeError("teleop check: the loop ran no tick")
        tail = np.asarray(errors[len(errors) // 5:])  # after the first fifth: the followers catch up first
        med = float(np.median(tail))
        return TeleopCheck(len(errors), med, float(tail.max()), med <= max_median_error)


def teleop_check(rig_ref: str, steps: int = 100, max_median_error: float = 0.2,
                 progress: Callable[[str], None] = lambda s: None) -> TeleopCheck:
    """A short teleop on the saved rig file (no squeeze wait): the followers must track the leaders."""
    from workbench.backends import build_rig
    from workbench.config import load_rig_config
    from workbench.session import RigSession

    rig = build_rig(load_rig_config(rig_ref))
    rig.connect(progress=progress)
    meter = TrackingMeter()
    session = RigSession(rig)
    try:
        session.add_tick_listener(meter)
        session.start_teleop(wait_for_squeeze=False, steps=steps)
        while not session.wait(0.2):
            pass
        if session.last_error is not None:
            raise session.last_error
    finally:
        session.close()
    return meter.result(max_median_error)
