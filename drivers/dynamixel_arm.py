"""ALOHA arms on Dynamixel buses: leader (WidowX 250 6DoF, "wx250s") and follower (ViperX 300 6DoF, "vx300s").

Implements `drivers.arm.Arm`. Values at the interface are ALOHA space: 6 joints in rad + normalized gripper
(0 closed .. 1 open). Conversions:
- joints: rad = (present ticks - 2048) * 2*pi/4096. Drive-mode reverse bits and homing offsets are written into the
  servos at connect, so the servos already report calibrated ticks and the driver's conversion is one affine map.
- leader gripper: its normalized gripper *joint* (GripperConstants.leader_joint_*).
- follower gripper: read -> normalized with the follower *joint* constants; command -> the follower gripper joint.
  The interface calls a follower's gripper value its normalized finger opening; we take the finger opening as
  linear in the gripper joint angle between the CLOSE and OPEN pairs, so both normalizations coincide (the
  linkage is close to linear over that range; ALOHA's own recorded data makes the same approximation).

Connect configures, while the affected servos' torque is off: Return Delay Time 0, drive modes, Secondary ID of
the shadow motors (3 -> 2, 5 -> 4), operating modes (follower gripper: current-based position with the configured
current limit; everything else position), homing offsets, velocity limit and position limits; EEPROM values are
only written where they differ (EEPROM wear; a configured arm keeps its torque). Afterwards followers hold their
present pose with torque on and leaders are torque-off (teleop default).

Follow mode (leaders only, `set_follow(True)`; for policy trials with operator takeover, HG-DAgger style): the leader
tracks goals the workbench sends (the followers' positions) with torque on but weak, so a hand can grab it.
Servos that have current-based position mode (XM430: waist .. wrist_angle and their shadows) switch to it
(Operating Mode 5) with Goal Current = `follow_current`; the WidowX's XL430 wrist_rotate and XC430 gripper have no
current control, so they stay in position mode with their output capped by Goal PWM = `follow_pwm` (in position
modes Goal PWM limits the controller's PWM). The operating mode is EEPROM, so the arm's torque goes off for the
switch (a few bus packets, ~ms), every goal is set to the present position, then torque goes on: no jump.
`set_follow(False)` is the takeover: torque off (teleop), configured modes and the previous Goal PWM restored.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from drivers.arm import ARM_DOF, GRIPPER_RANGE, JOINT_NAMES, ArmState, ArmStatus, JointStatus, Role
from drivers.dynamixel import control_table as ct
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.layout import ARM_MODELS, MotorSpec, default_layout
from drivers.errors import CommunicationError, DriverError, SafetyError, ServoHardwareError, describe_hardware_error
from drivers.gripper import GRIPPER_PRESETS, GripperConstants

log = logging.getLogger(__name__)

__all__ = ["DynamixelArm", "DynamixelArmConfig", "default_layout", "MotorSpec", "config_from_settings",
           "validate_arm_settings", "default_position_limits"]

_EEPROM_BLOCK = (ct.ID[0], ct.EEPROM_END - ct.ID[0])  # 7..63 in one sync read
_STATUS_BLOCK = (ct.TORQUE_ENABLE[0], ct.HARDWARE_ERROR_STATUS[0] - ct.TORQUE_ENABLE[0] + 1)  # 64..70
_HEALTH_BLOCK = (ct.PRESENT_INPUT_VOLTAGE[0], 3)  # voltage(2) temperature(1)


def default_position_limits(model: str) -> dict[str, tuple[float, float]]:
    """Joint limits (rad) of the 7 logical joints from the reference tick limits of `model`."""
    by_name = {m.name: m for m in default_layout(model)}
    return {j: (ct.ticks_to_rad(by_name[j].min_tick), ct.ticks_to_rad(by_name[j].max_tick)) for j in JOINT_NAMES}


@dataclass(frozen=True)
class DynamixelArmConfig:
    """One arm of a rig; the TOML rig file uses the same key names (minus name/role/gripper, set by the rig)."""

    name: str  # "follower_left"
    role: Role  # "leader" | "follower"
    port: str  # "/dev/ttyDXL_follower_left"
    model: str  # "vx300s" | "wx250s": motor layout, drive modes and default limits
    gripper: GripperConstants = GRIPPER_PRESETS["aloha1"]
    baudrate: int = 1_000_000
    gripper_current_limit: int = 300  # follower gripper Current Limit (2.69 mA units); ALOHA 1: 200, ALOHA 2: 300
    homing_offsets: Mapping[str, int] = field(default_factory=dict)  # motor name -> ticks (shadows included)
    position_limits: Mapping[str, tuple[float, float]] | None = None  # joint -> (lo, hi) rad; None = model default
    position_p_gain: int = 800
    velocity_limit: int = 131  # 0.229 rpm units (Interbotix value)
    # Follow mode (leaders, set_follow): Goal Current of the current-based position servos, 2.69 mA units. 200
    # (~540 mA, ~1 N m on an XM430-W350 from ROBOTIS' torque-current curve, a quarter of its 4.1 N m stall
    # torque; Interbotix's own current-control demo drives a 250-size arm's shoulder/elbow with 200 mA) holds
    # the leader's links near the commanded pose, shoulder and elbow doubled by their shadow motors, while a
    # hand overrides it with a few newtons. GELLO/LeRobot likewise run leader triggers in current-based position
    # mode at a low current so a finger can push them.
    follow_current: int = 200
    follow_pwm: int = 200  # follow mode, XL430/XC430 (no current control): Goal PWM of 885 (~23 % of the voltage)
    timeout_ms: float = 10.0  # reply timeout on top of the wire time (latency_timer=1 U2D2; pty emulator)
    retries: int = 2  # extra attempts after a timeout / corrupt reply

    def __post_init__(self) -> None:
        if self.role not in ("leader", "follower"):
            raise ValueError(f"role must be 'leader' or 'follower', got {self.role!r}")
        if self.model not in ARM_MODELS:
            raise ValueError(f"model must be one of {', '.join(ARM_MODELS)}, got {self.model!r}")
        if self.baudrate not in ct.BAUD_CODES:
            raise ValueError(f"baudrate {self.baudrate} is not a Dynamixel rate ({sorted(ct.BAUD_CODES)})")
        if not 0 <= self.gripper_current_limit <= 1193:
            raise ValueError(f"gripper_current_limit must be 0..1193 (XM430 units of 2.69 mA), "
                             f"got {self.gripper_current_limit}")
        if not 0 < self.follow_current <= 1193:
            raise ValueError(f"follow_current must be 1..1193 (Goal Current, XM430 units of 2.69 mA), "
                             f"got {self.follow_current}")
        if not 0 < self.follow_pwm <= ct.PWM_MAX:
            raise ValueError(f"follow_pwm must be 1..{ct.PWM_MAX} (Goal PWM, 885 = 100 %), got {self.follow_pwm}")
        if not 0 <= self.position_p_gain <= 16383:
            raise ValueError(f"position_p_gain must be 0..16383, got {self.position_p_gain}")
        if not 0 < self.velocity_limit <= 1023:
            raise ValueError(f"velocity_limit must be 1..1023, got {self.velocity_limit}")
        if not self.timeout_ms > 0 or self.retries < 0:
            raise ValueError("timeout_ms must be > 0 and retries >= 0")
        motors = {m.name for m in default_layout(self.model)}
        for k, v in dict(self.homing_offsets).items():
            if k not in motors:
                raise ValueError(f"homing_offsets: unknown motor {k!r}; motors: {', '.join(sorted(motors))}")
            if not isinstance(v, int) or isinstance(v, bool) or abs(v) > 1044479:
                raise ValueError(f"homing_offsets.{k} must be an integer tick count within +-1044479, got {v!r}")
        for k, v in dict(self.position_limits or {}).items():
            if k not in JOINT_NAMES:
                raise ValueError(f"position_limits: unknown joint {k!r}; joints: {', '.join(JOINT_NAMES)}")
            lo, hi = v
            if not (-math.pi <= lo < hi <= math.pi):
                raise ValueError(f"position_limits.{k} must be [lo, hi] rad with -pi <= lo < hi <= pi, got {v!r}")


_SETTING_NAMES = {f.name for f in fields(DynamixelArmConfig)} - {"name", "role", "gripper"}


def config_from_settings(name: str, role: Role, gripper: GripperConstants, settings: Mapping[str, Any],
                         port: str | None = None) -> DynamixelArmConfig:
    """Build a config from a rig file's arm table (TOML lists become tuples). `port` overrides settings' port."""
    unknown = set(settings) - _SETTING_NAMES
    if unknown:
        raise ValueError(f"unknown arm setting(s) {', '.join(sorted(unknown))}; allowed: "
                         f"{', '.join(sorted(_SETTING_NAMES))}")
    kw = dict(settings)
    if port is not None:
        kw["port"] = port
    if "position_limits" in kw and kw["position_limits"] is not None:
        kw["position_limits"] = {k: tuple(v) for k, v in kw["position_limits"].items()}
    kw.setdefault("port", "")
    kw.setdefault("model", "vx300s" if role == "follower" else "wx250s")
    return DynamixelArmConfig(name=name, role=role, gripper=gripper, **kw)


def validate_arm_settings(settings: Mapping[str, Any]) -> None:
    """Raise ValueError/TypeError naming the problem in a rig file's arm table."""
    config_from_settings("arm", "follower", GRIPPER_PRESETS["aloha1"], settings,
                         port=settings.get("port", "") or "")


class DynamixelArm:
    """An ALOHA arm on its own bus; see the module docstring for units and what connect() configures."""

    def __init__(self, config: DynamixelArmConfig):
        self.config = config
        self.name = config.name
        self.role: Role = config.role
        self.layout: tuple[MotorSpec, ...] = default_layout(config.model)
        self.motors = {m.name: m for m in self.layout}
        self.logical = [self.motors[j] for j in JOINT_NAMES]  # 7 primaries, ALOHA order
        self.logical_ids = [m.id for m in self.logical]
        self.all_ids = [m.id for m in self.layout]
        self.bus = DynamixelBus(config.port, self.layout, baudrate=config.baudrate, timeout_ms=config.timeout_ms,
                                retries=config.retries, name=config.name)
        g = config.gripper
        if self.role == "leader":
            self._g_close, self._g_open = g.leader_joint_close, g.leader_joint_open
        else:
            self._g_close, self._g_open = g.follower_joint_close, g.follower_joint_open
        self._g_span = self._g_open - self._g_close
        limits = dict(default_position_limits(config.model))
        limits.update(dict(config.position_limits or {}))
        self.position_limits = {j: (float(lo), float(hi)) for j, (lo, hi) in limits.items()}
        # per motor tick limits (shadows share their primary's: both receive the same goal value)
        self._tick_limits: dict[int, tuple[int, int]] = {}
        by_id = {m.id: m for m in self.layout}
        for m in self.layout:
            joint = by_id[m.shadow_of].name if m.is_shadow else m.name
            lo, hi = self.position_limits.get(joint, (ct.ticks_to_rad(m.min_tick), ct.ticks_to_rad(m.max_tick)))
            self._tick_limits[m.id] = (max(0, math.ceil(lo / ct.RAD_PER_TICK + ct.CENTER_TICK - 1e-9)),
                                       min(4095, math.floor(hi / ct.RAD_PER_TICK + ct.CENTER_TICK + 1e-9)))
        self._lo = np.array([self._tick_limits[i][0] for i in self.logical_ids], dtype=np.int64)
        self._hi = np.array([self._tick_limits[i][1] for i in self.logical_ids], dtype=np.int64)
        # preallocated SYNC WRITE parameter block: rows [id, b0, b1, b2, b3]
        self._cmd = np.zeros((ARM_DOF, 5), dtype=np.uint8)
        self._cmd[:, 0] = self.logical_ids
        self._cmd_ticks = np.zeros(ARM_DOF, dtype="<i4")
        self._torque: dict[int, bool] = {i: False for i in self.all_ids}  # what we want, for reboot()
        self._following = False
        self._saved_pwm: dict[int, int] = {}  # Goal PWM before follow mode, restored by set_follow(False)
        # follow mode per motor: current-based position where the model has it, else position with a PWM cap
        self._follow_current_ids = [m.id for m in self.layout if ct.MODE_CURRENT_POSITION in ct.MODELS[m.model].modes]
        self._follow_pwm_ids = [m.id for m in self.layout if m.id not in self._follow_current_ids]
        self._connected = False

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.position_limits[j][0] for j in JOINT_NAMES[:-1]] + [GRIPPER_RANGE[0]])
        hi = np.array([self.position_limits[j][1] for j in JOINT_NAMES[:-1]] + [GRIPPER_RANGE[1]])
        return lo, hi

    # -- conversions (vectorized) ----------------------------------------------------------------------------
    def ticks_to_aloha(self, ticks: np.ndarray) -> np.ndarray:
        q = (np.asarray(ticks, dtype=np.float64) - ct.CENTER_TICK) * ct.RAD_PER_TICK
        q[6] = (q[6] - self._g_close) / self._g_span
        return q

    def aloha_to_ticks(self, position: np.ndarray) -> np.ndarray:
        """ALOHA space (7,) -> goal ticks for the 7 primaries, clipped to the position limits."""
        q = np.array(position, dtype=np.float64, copy=True)
        q[6] = q[6] * self._g_span + self._g_close
        return np.clip(np.rint(q / ct.RAD_PER_TICK + ct.CENTER_TICK), self._lo, self._hi).astype(np.int64)

    # -- Arm protocol --------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected and self.bus.is_open

    def connect(self) -> None:
        self.bus.open()
        try:
            self.bus.check_motors()
            self._configure()
        except BaseException:
            self.bus.close()
            raise
        self._connected = True

    def _desired_eeprom(self, m: MotorSpec, current: bytes) -> list[tuple[tuple[int, int], int]]:
        c = self.config
        drive = (current[ct.DRIVE_MODE[0] - ct.ID[0]] & ~1) | int(m.reverse)
        gripper_follower = self.role == "follower" and m.name == "gripper"
        mode = self._configured_mode(m)
        lo, hi = self._tick_limits[m.id]
        want = [
            (ct.RETURN_DELAY_TIME, 0),
            (ct.DRIVE_MODE, drive),
            (ct.OPERATING_MODE, mode),
            (ct.SECONDARY_ID, m.shadow_of if m.is_shadow else 255),
            (ct.HOMING_OFFSET, int(dict(c.homing_offsets).get(m.name, 0))),
            (ct.VELOCITY_LIMIT, c.velocity_limit),
            (ct.MAX_POSITION_LIMIT, hi),
            (ct.MIN_POSITION_LIMIT, lo),
        ]
        if gripper_follower:
            want.append((ct.CURRENT_LIMIT, c.gripper_current_limit))
        return want

    def _configured_mode(self, m: MotorSpec) -> int:
        return ct.MODE_CURRENT_POSITION if self.role == "follower" and m.name == "gripper" else ct.MODE_POSITION

    def _configure(self) -> None:
        self._following = False  # connect writes the configured modes
        bus = self.bus
        eeprom, _ = bus.sync_read(self.all_ids, _EEPROM_BLOCK, raise_on_alert=False)
        status, errors = bus.sync_read(self.all_ids, _STATUS_BLOCK, raise_on_alert=False)
        n, base = _EEPROM_BLOCK[1], _EEPROM_BLOCK[0]
        for k, m in enumerate(self.layout):
            block = bytes(eeprom[k * n:(k + 1) * n])
            torque_on = bool(status[k * _STATUS_BLOCK[1]])
            for reg, value in self._desired_eeprom(m, block):
                addr, size = reg
                have = int.from_bytes(block[addr - base:addr - base + size], "little", signed=addr in ct.SIGNED)
                if have == value:
                    continue
                if torque_on:
                    bus.write(m.id, ct.TORQUE_ENABLE, 0)
                    torque_on = False
                log.info("%s: servo %d (%s) address %d: %d -> %d", self.name, m.id, m.name, addr, have, value)
                bus.write(m.id, reg, value)
            hw = status[k * _STATUS_BLOCK[1] + _STATUS_BLOCK[1] - 1]
            if hw:
                log.warning("%s: servo %d (%s) reports %s at connect; reboot it to clear", self.name, m.id, m.name,
                            describe_hardware_error(hw))
        bus.sync_write(ct.POSITION_P_GAIN, {i: self.config.position_p_gain for i in self.all_ids})
        follower = self.role == "follower"
        self._apply_torque({i: follower for i in self.all_ids})

    def _hold_present(self, ids: list[int]) -> None:
        """Goal := present for the primaries among `ids`, so torque-on never makes a joint jump."""
        primaries = [i for i in self.logical_ids if i in ids]
        if not primaries:
            return
        raw, _ = self.bus.sync_read(primaries, ct.PRESENT_POSITION, raise_on_alert=False)
        ticks = np.frombuffer(bytes(raw), dtype="<i4")
        goals = {}
        for i, t in zip(primaries, ticks):
            lo, hi = self._tick_limits[i]
            goals[i] = int(min(max(int(t), lo), hi))
        self.bus.sync_write(ct.GOAL_POSITION, goals)

    def _apply_torque(self, want: dict[int, bool]) -> None:
        on = [i for i, v in want.items() if v]
        off = [i for i, v in want.items() if not v]
        with self.bus.lock:
            if off:
                self.bus.sync_write(ct.TORQUE_ENABLE, {i: 0 for i in off})
            if on:
                self._hold_present(on)
                self.bus.sync_write(ct.TORQUE_ENABLE, {i: 1 for i in on})
        self._torque.update(want)

    # -- follow mode (leaders) ---------------------------------------------------------------------------------
    @property
    def following(self) -> bool:
        return self._following

    def set_follow(self, on: bool) -> None:
        """Leaders: on -> weak torque-on tracking of command() goals (see the module docstring); off -> torque off
        (teleop) in the configured modes. Followers raise DriverError. Idempotent."""
        if self.role != "leader":
            raise DriverError(f"{self.name} is a follower: set_follow is for leader arms (a follower is commanded "
                              f"through the safety layer, it never follows)")
        if not self.connected:
            raise DriverError(f"{self.name}: not connected (call connect())")
        bus = self.bus
        with bus.lock:
            # Operating Mode is EEPROM: torque off first, on every motor (a shadow must switch with its primary)
            bus.sync_write(ct.TORQUE_ENABLE, {i: 0 for i in self.all_ids})
            self._torque.update({i: False for i in self.all_ids})
            self._following = False
            for m in self.layout:
                want = (ct.MODE_CURRENT_POSITION if on and m.id in self._follow_current_ids
                        else self._configured_mode(m))
                if bus.read(m.id, ct.OPERATING_MODE) != want:
                    bus.write(m.id, ct.OPERATING_MODE, want)
            if on:
                if not self._saved_pwm:
                    raw, _ = bus.sync_read(self._follow_pwm_ids, ct.GOAL_PWM, raise_on_alert=False)
                    self._saved_pwm = dict(zip(self._follow_pwm_ids,
                                               np.frombuffer(bytes(raw), dtype="<i2").tolist()))
                self._write_follow_limits(self.all_ids)
                self._apply_torque({i: True for i in self.all_ids})  # goal := present first: no jump
                self._following = True
            elif self._saved_pwm:
                bus.sync_write(ct.GOAL_PWM, self._saved_pwm)
                self._saved_pwm = {}

    def _write_follow_limits(self, ids: list[int]) -> None:
        cur = {i: self.config.follow_current for i in ids if i in self._follow_current_ids}
        pwm = {i: self.config.follow_pwm for i in ids if i in self._follow_pwm_ids}
        if cur:
            self.bus.sync_write(ct.GOAL_CURRENT, cur)
        if pwm:
            self.bus.sync_write(ct.GOAL_PWM, pwm)

    def disconnect(self) -> None:
        try:
            if self.bus.is_open:
                self.bus.sync_write(ct.TORQUE_ENABLE, {i: 0 for i in self.all_ids})
        except Exception as exc:  # noqa: BLE001 - disconnect never raises
            log.warning("%s: torque off at disconnect failed: %s", self.name, exc)
        finally:
            self.bus.close()
            self._connected = False
            self._following = False

    def read(self) -> ArmState:
        """ONE sync read of Present Current/Velocity/Position (126..135) from the 7 primaries."""
        t0 = time.monotonic()
        raw, _ = self.bus.sync_read(self.logical_ids, ct.PRESENT_BLOCK)
        t1 = time.monotonic()
        block = np.frombuffer(raw, dtype=ct.PRESENT_BLOCK_DTYPE)
        position = (block["position"] - ct.CENTER_TICK) * ct.RAD_PER_TICK
        position[6] = (position[6] - self._g_close) / self._g_span
        velocity = block["velocity"] * ct.RAD_S_PER_VELOCITY_UNIT
        velocity[6] /= self._g_span
        effort = block["current"] * ct.CURRENT_UNIT_MA
        return ArmState(position, velocity, effort, 0.5 * (t0 + t1))  # servos sample between request and reply

    def command(self, position: np.ndarray) -> None:
        """ONE sync write of Goal Position to the 7 primaries (shadows follow through Secondary ID)."""
        q = np.asarray(position, dtype=np.float64)
        if q.shape != (ARM_DOF,):
            raise ValueError(f"{self.name}: command needs {ARM_DOF} values, got shape {q.shape}")
        t = q / ct.RAD_PER_TICK + ct.CENTER_TICK
        t[6] = (q[6] * self._g_span + self._g_close) / ct.RAD_PER_TICK + ct.CENTER_TICK
        if not np.isfinite(t).all():
            raise SafetyError(f"{self.name}: refusing a non-finite command {q.tolist()}")
        np.clip(np.rint(t, out=t), self._lo, self._hi, out=t)
        ticks = self._cmd_ticks
        ticks[:] = t
        self._cmd[:, 1:] = ticks.view(np.uint8).reshape(ARM_DOF, 4)
        self.bus.sync_write_raw(ct.GOAL_POSITION, self._cmd.ravel().tolist())

    def set_torque(self, arm: bool, gripper: bool | None = None) -> None:
        gripper = arm if gripper is None else gripper
        gid = self.motors["gripper"].id
        self._apply_torque({i: (gripper if i == gid else arm) for i in self.all_ids})

    def status(self) -> ArmStatus:
        joints = [JointStatus(name=m.name, servo_id=m.id) for m in self.layout]
        if not self.connected:
            for j in joints:
                j.message = "not connected"
            return ArmStatus(self.name, self.role, False, joints)
        try:
            st, _ = self.bus.sync_read(self.all_ids, _STATUS_BLOCK, raise_on_alert=False)
            health, _ = self.bus.sync_read(self.all_ids, _HEALTH_BLOCK, raise_on_alert=False)
            n = _STATUS_BLOCK[1]
            for k, j in enumerate(joints):
                j.torque = bool(st[k * n])
                j.hardware_error = st[k * n + n - 1]
                j.voltage_v = int.from_bytes(health[3 * k:3 * k + 2], "little") * ct.VOLTAGE_UNIT_V
                j.temperature_c = float(health[3 * k + 2])
        except CommunicationError:
            for j in joints:  # one by one, to say which servo is silent
                try:
                    j.torque = bool(self.bus.read(j.servo_id, ct.TORQUE_ENABLE))
                    j.hardware_error = self.bus.read(j.servo_id, ct.HARDWARE_ERROR_STATUS)
                    j.voltage_v = self.bus.read(j.servo_id, ct.PRESENT_INPUT_VOLTAGE) * ct.VOLTAGE_UNIT_V
                    j.temperature_c = float(self.bus.read(j.servo_id, ct.PRESENT_TEMPERATURE))
                except DriverError as exc:
                    j.message = f"no reply: {exc}"
        for j in joints:
            if j.hardware_error:
                j.message = ServoHardwareError(self.name, j.name, j.servo_id, j.hardware_error).args[0]
        return ArmStatus(self.name, self.role, True, joints)

    def reboot(self, joint: str) -> None:
        """REBOOT the joint's servo (and its shadow), then restore gain, goal = present and the torque state."""
        if joint not in self.motors:
            raise ValueError(f"{self.name}: unknown joint {joint!r}; joints: {', '.join(self.motors)}")
        m = self.motors[joint]
        ids = [m.id] + [s.id for s in self.layout if s.shadow_of == m.id]
        with self.bus.lock:
            for i in ids:
                self.bus.reboot(i)
            for i in ids:
                self.bus.write(i, ct.POSITION_P_GAIN, self.config.position_p_gain)
                bits = self.bus.hardware_error(i)
                if bits:
                    raise ServoHardwareError(self.name, self.bus.joint(i), i, bits)
            if self._following:  # RAM defaults are stiff: a rebooted follow-mode servo gets its weak limits back
                self._write_follow_limits(ids)
            self._apply_torque({i: self._torque.get(i, False) for i in ids})

    # -- extras ---------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"DynamixelArm({self.name!r}, {self.role}, {self.config.model} on {self.config.port})"
