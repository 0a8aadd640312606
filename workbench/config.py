"""Rig configuration: one TOML file (or a built-in preset) says what arms, cameras, rates and limits a rig has.

Every number the rest of the workbench uses about the rig (ports, gripper constants, camera rates, safety
limits, quality thresholds) flows from here. Validation errors name the file, the key and what to do.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from drivers.arm import DEFAULT_CONTROL_HZ, SIDES
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from workbench.safety import SafetyConfig

Backend = Literal["sim", "virtual", "dynamixel"]
BACKENDS = ("sim", "virtual", "dynamixel")
CAMERA_KINDS = ("opencv", "realsense", "sim", "synthetic")
SIM_TASKS = ("transfer_cube", "insertion")
PRESETS = ("aloha", "sim-transfer-cube", "sim-insertion", "virtual")


class ConfigError(ValueError):
    """A rig file is malformed; the message names the file and the key."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"rig config {source}: {key}: {problem}")


@dataclass(frozen=True)
class ArmEntry:
    name: str  # "leader_left", "follower_right", ...
    role: Literal["leader", "follower"]
    side: str
    settings: dict[str, Any] = field(default_factory=dict)  # backend-specific (port, model, calibration...)


@dataclass(frozen=True)
class CameraEntry:
    name: str  # "cam_high", ...
    kind: str
    width: int = 640
    height: int = 480
    fps: int = 30
    settings: dict[str, Any] = field(default_factory=dict)  # device, serial, fourcc, ...


@dataclass(frozen=True)
class SimSettings:
    task: str = "transfer_cube"
    seed: int = 0
    realtime: bool = False  # throttle simulated time to wall-clock time (GUI); headless runs go flat out


@dataclass(frozen=True)
class RigConfig:
    name: str
    backend: Backend
    control_hz: float
    rt_priority: int  # SCHED_FIFO priority of the control loop thread on a real-time clock; 0: a lower nice only
    gripper: GripperConstants
    gripper_set: str  # preset name, or "custom"
    arms: tuple[ArmEntry, ...]
    cameras: tuple[CameraEntry, ...]
    safety: SafetyConfig
    quality: dict[str, Any]
    sim: SimSettings
    source: str  # file path or "preset:<name>"
    text: str  # the TOML text it was read from (stored in every episode as the rig snapshot)

    def arm(self, name: str) -> ArmEntry:
        return next(a for a in self.arms if a.name == name)

    def arms_by_role(self, role: str) -> dict[str, ArmEntry]:
        return {a.side: a for a in self.arms if a.role == role}

    @property
    def has_leaders(self) -> bool:
        """False for a deployment-only rig (followers and cameras, no leader arms): no teleop, no recording."""
        return self.backend == "sim" or bool(self.arms_by_role("leader"))

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz


# -- loading ---------------------------------------------------------------------------------------------

def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise ConfigError(f"preset:{name}", "rig", f"unknown preset; choose one of {', '.join(PRESETS)} or give a .toml file")
    return resources.files("workbench.presets").joinpath(f"{name}.toml").read_text()


def load_rig_config(ref: str | Path) -> RigConfig:
    """`ref` is a preset name or a path to a TOML rig file."""
    ref_s = str(ref)
    if ref_s in PRESETS:
        return parse_rig_config(preset_text(ref_s), f"preset:{ref_s}")
    path = Path(ref_s).expanduser()
    if not path.exists():
        raise ConfigError(ref_s, "rig", f"no such file and not a preset ({', '.join(PRESETS)})")
    return parse_rig_config(path.read_text(), str(path))


def parse_rig_config(text: str, source: str = "<string>") -> RigConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"not valid TOML: {exc}") from None
    r = _Reader(source)
    r.keys(doc, "", {"rig", "arms", "cameras", "safety", "quality", "sim", "gripper"})
    rig = r.table(doc, "rig")
    r.keys(rig, "rig", {"name", "backend", "control_hz", "gripper", "rt_priority"})
    backend = r.choice(rig, "rig.backend", BACKENDS, required=True)
    control_hz = float(r.number(rig, "rig.control_hz", default=DEFAULT_CONTROL_HZ, lo=1.0, hi=1000.0))
    rt_priority = int(r.number(rig, "rig.rt_priority", default=50, lo=0, hi=99, integer=True))
    gripper, gripper_set = _gripper(r, rig, doc)
    arms = _arms(r, doc, backend)
    cameras = _cameras(r, doc, backend, control_hz)
    safety = _safety(r, doc)
    quality = dict(r.table(doc, "quality", required=False))
    _check_quality(r, quality)
    sim = _sim(r, doc, backend)
    if backend == "sim" and control_hz != DEFAULT_CONTROL_HZ:
        r.fail("rig.control_hz", f"the simulated ALOHA steps its physics in {1e3 / DEFAULT_CONTROL_HZ:g} ms ticks "
                                 f"(gym-aloha): use {DEFAULT_CONTROL_HZ:g}")
    return RigConfig(
        name=str(rig.get("name", Path(source).stem)),
        backend=backend, control_hz=control_hz, rt_priority=rt_priority, gripper=gripper, gripper_set=gripper_set,
        arms=arms, cameras=cameras, safety=safety, quality=quality, sim=sim, source=source, text=text,
    )


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str):
        raise ConfigError(self.source, key, problem)

    def keys(self, table: dict, where: str, allowed: set[str]):
        for k in table:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k, f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def table(self, doc: dict, key: str, required: bool = True) -> dict:
        v = doc.get(key.split(".")[-1])
        if v is None:
            if required:
                self.fail(key, "missing table")
            return {}
        if not isinstance(v, dict):
            self.fail(key, f"must be a table, got {type(v).__name__}")
        return v

    def choice(self, t: dict, key: str, options, required=False, default=None):
        name = key.split(".")[-1]
        if name not in t:
            if required:
                self.fail(key, f"missing; one of {', '.join(options)}")
            return default
        v = t[name]
        if v not in options:
            self.fail(key, f"{v!r} is not one of {', '.join(options)}")
        return v

    def number(self, t: dict, key: str, default=None, lo=None, hi=None, integer=False):
        name = key.split(".")[-1]
        if name not in t:
            if default is None:
                self.fail(key, "missing")
            return default
        v = t[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(key, f"{v} is outside [{lo}, {hi}]")
        return v


def _gripper(r: _Reader, rig: dict, doc: dict) -> tuple[GripperConstants, str]:
    custom = doc.get("gripper")
    if custom is not None:
        if "gripper" in rig:
            r.fail("rig.gripper", "give either rig.gripper (a preset name) or a [gripper] table, not both")
        names = [f.name for f in dataclasses.fields(GripperConstants)]
        r.keys(custom, "gripper", set(names))
        missing = [n for n in names if n not in custom]
        if missing:
            r.fail("gripper", f"missing {', '.join(missing)} (or use rig.gripper = one of {', '.join(GRIPPER_PRESETS)})")
        return GripperConstants(**{n: float(r.number(custom, f"gripper.{n}")) for n in names}), "custom"
    name = r.choice(rig, "rig.gripper", tuple(GRIPPER_PRESETS), default="aloha1")
    return GRIPPER_PRESETS[name], name


def _arms(r: _Reader, doc: dict, backend: str) -> tuple[ArmEntry, ...]:
    arms = r.table(doc, "arms", required=backend != "sim")
    entries, ports = [], {}
    for name, t in arms.items():
        key = f"arms.{name}"
        if not isinstance(t, dict):
            r.fail(key, "must be a table")
        role = r.choice(t, f"{key}.role", ("leader", "follower"), required=True)
        side = r.choice(t, f"{key}.side", SIDES, required=True)
        settings = {k: v for k, v in t.items() if k not in ("role", "side")}
        if backend in ("dynamixel", "virtual"):
            from drivers.dynamixel_arm import DynamixelArmConfig

            if backend == "dynamixel":
                port = settings.get("port")
                if not port:
                    r.fail(f"{key}.port", f"missing; the serial device of this arm, e.g. /dev/ttyDXL_{name}")
                if port in ports:
                    r.fail(f"{key}.port", f"{port} is already used by arms.{ports[port]}; every arm has its own U2D2 bus")
                ports[port] = name
            elif "port" in settings:
                r.fail(f"{key}.port", "the virtual rig assigns emulator ports itself; remove it")
            _check_fields(r, key, settings, DynamixelArmConfig, exclude={"name", "role", "gripper"})
            _check_arm_model(r, key, settings)
        elif settings and backend == "sim":
            r.fail(key, f"simulated arms take no settings, got {', '.join(settings)}")
        entries.append(ArmEntry(name=name, role=role, side=side, settings=settings))
    seen = {(e.role, e.side): e.name for e in entries}
    if len(seen) != len(entries):
        r.fail("arms", "two arms share the same role and side")
    if backend != "sim":
        for side in SIDES:
            if ("follower", side) not in seen:
                r.fail("arms", f"no follower arm on the {side} side; an ALOHA rig has follower arms on both sides")
        leaders = [side for side in SIDES if ("leader", side) in seen]
        if len(leaders) == 1:
            r.fail("arms", f"only a {leaders[0]} leader arm; give leaders on both sides (teleop) or none "
                           "(a deployment-only rig)")
    return tuple(entries)


def _check_arm_model(r: _Reader, key: str, settings: dict) -> None:
    """An arm's `model` must be one the Dynamixel driver has a motor layout for (drivers.dynamixel.layout)."""
    from drivers.dynamixel.layout import ARM_MODELS

    if "model" in settings and settings["model"] not in ARM_MODELS:
        r.fail(f"{key}.model", f"unknown arm model {settings['model']!r}; known models: {', '.join(ARM_MODELS)}")


def _cameras(r: _Reader, doc: dict, backend: str, control_hz: float) -> tuple[CameraEntry, ...]:
    out, devices = [], {}
    for name, t in r.table(doc, "cameras", required=False).items():
        key = f"cameras.{name}"
        if not isinstance(t, dict):
            r.fail(key, "must be a table")
        kind = r.choice(t, f"{key}.kind", CAMERA_KINDS, required=True)
        if kind == "sim" and backend != "sim":
            r.fail(f"{key}.kind", "simulated cameras need rig.backend = 'sim'")
        width = int(r.number(t, f"{key}.width", default=640, lo=16, hi=4096, integer=True))
        height = int(r.number(t, f"{key}.height", default=480, lo=16, hi=4096, integer=True))
        fps = int(r.number(t, f"{key}.fps", default=30, lo=1, hi=240, integer=True))
        if kind == "realsense" and fps not in (5, 6, 15, 30, 60, 90):
            r.fail(f"{key}.fps", f"a RealSense colour stream runs at 5, 6, 15, 30, 60 or 90 fps, not {fps}")
        if kind == "sim" and fps > control_hz:
            r.fail(f"{key}.fps", f"a simulated camera renders at most once per control tick ({control_hz:g} Hz), not {fps}")
        settings = {k: v for k, v in t.items() if k not in ("kind", "width", "height", "fps")}
        ident = settings.get("serial", settings.get("device"))
        if kind in ("opencv", "realsense"):
            need = "serial" if kind == "realsense" else "device"
            if ident in (None, ""):
                r.fail(f"{key}.{need}", f"missing; the {'serial number' if need == 'serial' else 'device index or /dev path'} of this camera")
            if ident in devices:
                r.fail(f"{key}.{need}", f"{ident!r} is already used by cameras.{devices[ident]}")
            devices[ident] = name
        if kind == "sim":
            r.keys(settings, key, {"mujoco_camera"})
        else:
            _check_fields(r, key, settings, _camera_config_class(kind), exclude={"name", "width", "height", "fps"})
        out.append(CameraEntry(name=name, kind=kind, width=width, height=height, fps=fps, settings=settings))
    return tuple(out)


def _camera_config_class(kind: str):
    from drivers.cameras import config as cc

    return {"opencv": cc.OpenCVCameraConfig, "realsense": cc.RealSenseCameraConfig,
            "synthetic": cc.SyntheticCameraConfig}[kind]


def _check_fields(r: _Reader, key: str, settings: dict, cls, exclude: set[str]) -> None:
    """Unknown keys and wrongly typed values of a driver config dataclass, named as TOML keys."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    r.keys(settings, key, set(fields))
    for k, v in settings.items():
        default = fields[k].default
        if default is dataclasses.MISSING or default is None:
            continue
        want = type(default)
        ok = isinstance(v, want) or (want is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            r.fail(f"{key}.{k}", f"must be {want.__name__}, got {v!r}")


def _safety(r: _Reader, doc: dict) -> SafetyConfig:
    t = r.table(doc, "safety", required=False)
    ranges = {"max_joint_step": 1.0, "max_gripper_step": 1.0, "max_joint_velocity": 10.0, "max_goal_error": 3.2,
              "start_gap": 3.2, "realign_velocity": 5.0,
              "max_chunk_age_s": 10.0}  # upper bounds: beyond them a value is a typo
    r.keys(t, "safety", {*ranges, "estop_action", "joint_limits", "max_chunk_refusals"})
    kwargs: dict[str, Any] = {}
    for k, hi in ranges.items():
        if k in t:
            kwargs[k] = float(r.number(t, f"safety.{k}", lo=1e-6, hi=hi))
    if "max_chunk_refusals" in t:
        kwargs["max_chunk_refusals"] = r.number(t, "safety.max_chunk_refusals", lo=1, hi=1000, integer=True)
    if "estop_action" in t:
        kwargs["estop_action"] = r.choice(t, "safety.estop_action", ("hold", "torque_off"))
    if "joint_limits" in t:
        limits = {}
        for j, v in t["joint_limits"].items():
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)):
                r.fail(f"safety.joint_limits.{j}", f"must be [lower, upper] in rad, got {v!r}")
            limits[j] = (float(v[0]), float(v[1]))
        kwargs["joint_limits"] = limits
    try:
        return SafetyConfig(**kwargs)
    except ValueError as exc:
        r.fail("safety", str(exc))


def _check_quality(r: _Reader, quality: dict) -> None:
    try:
        from recorder.quality import QualityThresholds
    except ImportError:  # recorder not installed in this build
        return
    allowed = {f.name for f in dataclasses.fields(QualityThresholds)}
    r.keys(quality, "quality", allowed)
    try:
        QualityThresholds(**quality)
    except (TypeError, ValueError) as exc:
        r.fail("quality", str(exc))


def _sim(r: _Reader, doc: dict, backend: str) -> SimSettings:
    t = r.table(doc, "sim", required=False)
    if t and backend != "sim":
        r.fail("sim", "a [sim] table needs rig.backend = 'sim'")
    r.keys(t, "sim", {"task", "seed", "realtime"})
    return SimSettings(
        task=r.choice(t, "sim.task", SIM_TASKS, default="transfer_cube"),
        seed=int(r.number(t, "sim.seed", default=0, integer=True)),
        realtime=bool(t.get("realtime", False)),
    )
