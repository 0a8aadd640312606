"""A chain of emulated X-series servos answering Protocol 2.0 on a pseudo-terminal.

The real dynamixel-sdk opens the pty's slave path as if it were a U2D2; this module sits on the master side.
It is a behavioural model, not a physics simulation: enough to exercise a driver honestly.

- Control table per model with factory defaults, EEPROM write protection while torque is on (access error),
  read-only areas, operating modes checked per model (XL430/XC430 have no current-based position mode).
- Motion: a servo keeps a *shaft* angle (ticks as drive mode 0 / homing offset 0 would report it). Present
  Position = mirror(shaft) if reverse + Homing Offset. With torque on in a position mode the shaft moves toward the
  goal (clamped to the position limits) at the Profile Velocity (or Velocity Limit when that is 0), integrated
  from the elapsed time whenever the chain handles a packet.
- Secondary ID: a servo with Secondary ID = N executes writes addressed to N and never answers for N.
  Shadow pairs (3 -> 2, 5 -> 4) are mechanically coupled: when a hand moves the primary, the shadow turns the
  opposite way (shaft_shadow = 4096 - shaft_primary).
- Hardware errors: `inject_hardware_error` drops torque, sets Hardware Error Status and flags bit 7 of every
  status packet from that servo; only REBOOT clears it. REBOOT replies, then the servo is silent for `boot_time_s`
  and comes back with RAM defaults (torque off, goal = present) and its EEPROM intact.
- Faults by ID: "no_reply", "corrupt_crc", "late" (extra delay), for a number of replies or until cleared.
- Return Delay Time (2 us units) delays replies; replies of one sync/bulk read go out in list order, each no
  earlier than the previous (a late servo delays the ones after it, as on a real half-duplex bus).
- A `HandMotion` per servo moves a torque-off joint as an operator's hand would (virtual rig leaders).
- Mechanical stops (`Servo.stops`, shaft ticks; None = none): the linkage's own range (a gripper's fingers
  closed / fully open). Whatever drives the shaft (its controller, a hand), it stops there; a servo with torque
  whose goal lies beyond stalls at the stop with its current saturated (what gripper calibration measures).
- A *grab* (`ServoChain.grab`) is an operator's hand taking hold of a joint and moving it toward a position at a
  hand's speed. Whether the hand or the servo wins is decided by how hard the servo may push (its holding
  strength), not by a force balance: torque off, or in current-based position mode a |Goal Current| below
  HAND_OVERRIDE_CURRENT, or in position mode a |Goal PWM| below HAND_OVERRIDE_PWM -> the hand moves the joint
  (and its coupled shadow) and the servo only reports its saturated current pushing back toward its goal; above
  those the servo holds its goal as if nobody touched it. On release the servo goes back toward its goal at its
  speed (current-based position mode: what a leader in follow mode does when the operator lets go). The thresholds
  stand for "a hand overpowers it": ~1 A on an XM430-W350 is ~1.8 N m, a firm push at 30 cm; a third of the
  supply voltage on an XL430/XC430 likewise.
"""
from __future__ import annotations

import math
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Callable, Iterable

from drivers.dynamixel import control_table as ct
from drivers.dynamixel import protocol as p

POSITION_MODES = (ct.MODE_POSITION, ct.MODE_EXTENDED_POSITION, ct.MODE_CURRENT_POSITION)
_READ_ONLY = set(range(0, 7)) | {ct.HARDWARE_ERROR_STATUS[0]} | set(range(122, ct.TABLE_SIZE))
_CONTROL_TABLE_END = 662  # X-series tables end with the indirect data area at 661
_FIRMWARE = 46

FAULT_KINDS = ("no_reply", "corrupt_crc", "late")
HAND_OVERRIDE_CURRENT = 400  # Goal Current units (2.69 mA): below it a hand overpowers a current-based position servo
HAND_OVERRIDE_PWM = 300  # Goal PWM units (of 885): below it a hand overpowers a position-mode servo
GRAB_SPEED_TICKS_S = 3000.0  # how fast a grabbing hand moves a joint (~4.6 rad/s)


@dataclass
class HandMotion:
    """Where an operator's hand moves a torque-off joint, as a function of time since it was let go.

    Positions are Present Position ticks relative to `base` (where the joint was when torque went off) for
    "sine"; for "squeeze" the joint first goes to `squeeze_to` (absolute ticks) within 0.3 s, holds it until
    `squeeze_s`, then swings between `squeeze_to` and `open_to` with frequency `freq_hz`.
    """

    kind: str = "sine"  # "sine" | "squeeze"
    amplitude: float = 150.0  # ticks
    freq_hz: float = 0.2
    squeeze_to: float = 0.0
    open_to: float = 0.0
    squeeze_s: float = 1.2

    def target(self, tau: float, base: float) -> float:
        if self.kind == "squeeze":
            if tau < self.squeeze_s:
                return base + (self.squeeze_to - base) * min(tau / 0.3, 1.0)
            phase = 2.0 * math.pi * self.freq_hz * (tau - self.squeeze_s)
            return self.squeeze_to + (self.open_to - self.squeeze_to) * 0.5 * (1.0 - math.cos(phase))
        return base + self.amplitude * math.sin(2.0 * math.pi * self.freq_hz * tau)


class Servo:
    """One emulated servo: control table bytes plus a shaft angle."""

    def __init__(self, dxl_id: int, model: str, shaft: float = ct.CENTER_TICK, hand: HandMotion | None = None,
                 boot_time_s: float = 0.02, stops: tuple[float, float] | None = None):
        self.info = ct.MODELS[model]
        self.table = bytearray(_CONTROL_TABLE_END)
        self.shaft = float(shaft)
        self.velocity = 0.0  # shaft ticks/s of the last update
        self.hand = hand
        self.boot_time_s = boot_time_s
        self.booting_until = 0.0
        self.last_t = time.monotonic()
        self.released_at: float | None = None  # when torque last went off (hand motion clock)
        self.released_base = 0.0
        self.pending_write: tuple[int, bytes] | None = None  # REG WRITE
        self.grab_target: float | None = None  # Present Position ticks an operator's hand pulls the joint to
        self.grab_speed = GRAB_SPEED_TICKS_S
        self.stops = None if stops is None else (float(min(stops)), float(max(stops)))  # mechanical, shaft ticks
        if self.stops is not None:
            self.shaft = min(max(self.shaft, self.stops[0]), self.stops[1])
        self._factory_reset(dxl_id)

    # -- control table -----------------------------------------------------------------------------------
    def get(self, reg: tuple[int, int], signed: bool = False) -> int:
        addr, size = reg
        return int.from_bytes(self.table[addr:addr + size], "little", signed=signed)

    def set(self, reg: tuple[int, int], value: int) -> None:
        addr, size = reg
        self.table[addr:addr + size] = ct.to_unsigned(int(value), size).to_bytes(size, "little")

    def _factory_reset(self, dxl_id: int) -> None:
        self.table[:] = bytes(len(self.table))
        self.set(ct.MODEL_NUMBER, self.info.number)
        self.set(ct.FIRMWARE_VERSION, _FIRMWARE)
        self.set(ct.ID, dxl_id)
        self.set(ct.BAUD_RATE, 1)
        self.set(ct.RETURN_DELAY_TIME, 250)
        self.set(ct.OPERATING_MODE, ct.MODE_POSITION)
        self.set(ct.SECONDARY_ID, 255)
        self.set(ct.TEMPERATURE_LIMIT, 80)
        self.set(ct.PWM_LIMIT, 885)
        self.set(ct.CURRENT_LIMIT, self.info.current_limit)
        self.set(ct.VELOCITY_LIMIT, self.info.velocity_limit)
        self.set(ct.MAX_POSITION_LIMIT, 4095)
        self.set(ct.MIN_POSITION_LIMIT, 0)
        self.set(ct.SHUTDOWN, 52)
        self._ram_defaults()

    def _ram_defaults(self) -> None:
        self.table[64:ct.TABLE_SIZE] = bytes(ct.TABLE_SIZE - 64)
        self.set(ct.STATUS_RETURN_LEVEL, 2)
        self.set(ct.POSITION_P_GAIN, 800)
        self.set(ct.GOAL_CURRENT, self.info.current_limit)
        self.set(ct.GOAL_PWM, self.get(ct.PWM_LIMIT))
        self.set(ct.PRESENT_INPUT_VOLTAGE, 120)
        self.set(ct.PRESENT_TEMPERATURE, 36)
        self.set(ct.GOAL_POSITION, round(self.present()))
        self.released_at = None
        self._refresh_present()

    @property
    def id(self) -> int:
        return self.table[ct.ID[0]]

    @property
    def secondary_id(self) -> int:
        return self.table[ct.SECONDARY_ID[0]]

    @property
    def torque(self) -> bool:
        return bool(self.table[ct.TORQUE_ENABLE[0]])

    @property
    def hardware_error(self) -> int:
        return self.table[ct.HARDWARE_ERROR_STATUS[0]]

    @property
    def reverse(self) -> bool:
        return bool(self.table[ct.DRIVE_MODE[0]] & 1)

    @property
    def mode(self) -> int:
        return self.table[ct.OPERATING_MODE[0]]

    def present(self) -> float:
        return ct.present_from_shaft(self.shaft, self.reverse, self.get(ct.HOMING_OFFSET, signed=True))

    def set_present(self, ticks: float) -> None:
        """Put the joint where it would read `ticks` (an operator moving it, or a test's starting pose)."""
        self.shaft = ct.shaft_from_present(ticks, self.reverse, self.get(ct.HOMING_OFFSET, signed=True))

    # -- behaviour -----------------------------------------------------------------------------------------
    def error_byte(self) -> int:
        return p.ERR_HARDWARE_ALERT if self.hardware_error else 0

    def read(self, addr: int, length: int) -> tuple[int, bytes]:
        if length < 1 or addr + length > _CONTROL_TABLE_END:
            return p.ERR_ACCESS, b""
        return 0, bytes(self.table[addr:addr + length])

    def write(self, addr: int, data: bytes, now: float) -> int:
        """Apply a write; returns the status error code (0 = ok). Nothing changes when it fails."""
        end = addr + len(data)
        if not data or end > _CONTROL_TABLE_END or any(a in _READ_ONLY for a in range(addr, end)):
            return p.ERR_ACCESS
        if addr < ct.EEPROM_END and self.torque:
            return p.ERR_ACCESS
        new = bytearray(self.table)
        new[addr:end] = data

        def changed(reg):
            return addr < reg[0] + reg[1] and reg[0] < end

        def val(reg, signed=False):
            return int.from_bytes(new[reg[0]:reg[0] + reg[1]], "little", signed=signed)

        if changed(ct.OPERATING_MODE) and val(ct.OPERATING_MODE) not in self.info.modes:
            return p.ERR_DATA_RANGE
        if changed(ct.ID) and val(ct.ID) > p.MAX_ID:
            return p.ERR_DATA_RANGE
        if changed(ct.SECONDARY_ID) and p.MAX_ID < val(ct.SECONDARY_ID) < 255:
            return p.ERR_DATA_RANGE
        if changed(ct.TORQUE_ENABLE) and val(ct.TORQUE_ENABLE) > 1:
            return p.ERR_DATA_RANGE
        if changed(ct.GOAL_CURRENT) and abs(val(ct.GOAL_CURRENT, signed=True)) > self.get(ct.CURRENT_LIMIT):
            return p.ERR_DATA_LIMIT
        if changed(ct.GOAL_PWM) and abs(val(ct.GOAL_PWM, signed=True)) > self.get(ct.PWM_LIMIT):
            return p.ERR_DATA_LIMIT
        if changed(ct.GOAL_POSITION) and self.mode in (ct.MODE_POSITION, ct.MODE_CURRENT_POSITION):
            g = val(ct.GOAL_POSITION, signed=True)
            if not self.get(ct.MIN_POSITION_LIMIT) <= g <= self.get(ct.MAX_POSITION_LIMIT):
                return p.ERR_DATA_LIMIT
        self.update(now)
        was_on = self.torque
        if changed(ct.TORQUE_ENABLE) and val(ct.TORQUE_ENABLE) and self.hardware_error:
            new[ct.TORQUE_ENABLE[0]] = 0  # a shut-down servo refuses torque until REBOOT
        self.table[:] = new  # drive mode / homing offset changes leave the shaft put; only the reading moves
        if self.torque and not was_on:
            self.set(ct.GOAL_POSITION, round(self.present()))  # X-series: torque on holds the present position
        elif was_on and not self.torque:
            self._release(now)
        self._refresh_present()
        return 0

    def _release(self, now: float) -> None:
        self.released_at = now
        self.released_base = self.present()

    def shutdown(self, bits: int, now: float) -> None:
        """Hardware alert: torque drops, Hardware Error Status latches until REBOOT."""
        self.update(now)
        self.table[ct.HARDWARE_ERROR_STATUS[0]] |= bits
        if self.torque:
            self.table[ct.TORQUE_ENABLE[0]] = 0
            self._release(now)
        self._refresh_present()

    def reboot(self, now: float) -> None:
        self.update(now)
        self._ram_defaults()
        self.booting_until = now + self.boot_time_s

    def speed(self) -> float:
        """Shaft ticks/s the servo moves at toward its goal."""
        vlim = self.get(ct.VELOCITY_LIMIT)
        prof = self.get(ct.PROFILE_VELOCITY)
        units = min(prof, vlim) if prof and vlim else (prof or vlim or 1023)
        return units * ct.TICKS_S_PER_VELOCITY_UNIT

    @property
    def hand_overrides(self) -> bool:
        """A grabbing hand moves this joint: torque off, or the servo may not push hard enough to resist."""
        if self.grab_target is None:
            return False
        if not self.torque:
            return True
        if self.mode == ct.MODE_CURRENT_POSITION:
            return abs(self.get(ct.GOAL_CURRENT, signed=True)) < HAND_OVERRIDE_CURRENT
        if self.mode in POSITION_MODES:
            return abs(self.get(ct.GOAL_PWM, signed=True)) < HAND_OVERRIDE_PWM
        return False

    def update(self, now: float) -> None:
        dt = now - self.last_t
        if dt <= 0.0:
            return
        self.last_t = now
        before = self.shaft
        mode = self.mode
        if self.hand_overrides:
            present = self.present()
            lo, hi = self.get(ct.MIN_POSITION_LIMIT), self.get(ct.MAX_POSITION_LIMIT)
            target = min(max(self.grab_target, lo), hi)  # the arm's mechanical range
            step = self.grab_speed * dt
            err = target - present
            self.set_present(target if abs(err) <= step else present + math.copysign(step, err))
        elif self.torque and mode in POSITION_MODES:
            goal = self.get(ct.GOAL_POSITION, signed=True)
            if mode != ct.MODE_EXTENDED_POSITION:
                goal = min(max(goal, self.get(ct.MIN_POSITION_LIMIT)), self.get(ct.MAX_POSITION_LIMIT))
            target = ct.shaft_from_present(goal, self.reverse, self.get(ct.HOMING_OFFSET, signed=True))
            step = self.speed() * dt
            err = target - self.shaft
            self.shaft = target if abs(err) <= step else self.shaft + math.copysign(step, err)
        elif self.torque and mode == ct.MODE_VELOCITY:
            v = self.get(ct.GOAL_VELOCITY, signed=True) * ct.TICKS_S_PER_VELOCITY_UNIT
            self.shaft += (-v if self.reverse else v) * dt
        elif not self.torque and self.hand is not None and self.released_at is not None:
            t = self.hand.target(now - self.released_at, self.released_base)
            t = min(max(t, self.get(ct.MIN_POSITION_LIMIT)), self.get(ct.MAX_POSITION_LIMIT))
            self.set_present(t)
        if self.stops is not None:  # the linkage ends here, whatever pushes the shaft
            self.shaft = min(max(self.shaft, self.stops[0]), self.stops[1])
        self.velocity = (self.shaft - before) / dt
        self._refresh_present()

    def _refresh_present(self) -> None:
        present = self.present()
        self.set(ct.PRESENT_POSITION, round(present))
        v = -self.velocity if self.reverse else self.velocity
        self.set(ct.PRESENT_VELOCITY, round(v / ct.TICKS_S_PER_VELOCITY_UNIT))
        self.table[ct.MOVING[0]] = 1 if abs(self.velocity) > 1.0 else 0
        current = 0
        if self.torque and self.mode in POSITION_MODES:
            limit = self.get(ct.CURRENT_LIMIT) or 1193
            if self.mode == ct.MODE_CURRENT_POSITION:
                limit = min(limit, abs(self.get(ct.GOAL_CURRENT, signed=True)))
            err = self.get(ct.GOAL_POSITION, signed=True) - present
            current = int(max(-limit, min(limit, 2.0 * err)))
        self.set(ct.PRESENT_CURRENT, current)


@dataclass
class _Fault:
    kind: str
    remaining: int | None  # None = until cleared
    delay_s: float = 0.0


class ServoChain:
    """Servos on one bus: decodes instruction packets and produces the status packets the bus would carry.

    Thread-safe: packet handling and the injection methods take `lock`.
    """

    def __init__(self, servos: Iterable[Servo], couplings: dict[int, int] | None = None):
        self.servos: dict[int, Servo] = {}
        for s in servos:
            self.servos[s.id] = s
        self.couplings = dict(couplings or {})  # shadow ID -> primary ID (mechanical, opposite mounting)
        self.faults: dict[int, _Fault] = {}
        self.lock = threading.RLock()
        self.packets_handled = 0
        for shadow, primary in self.couplings.items():
            if shadow in self.servos and primary in self.servos:
                self.servos[shadow].shaft = ct.TICKS_PER_REV - self.servos[primary].shaft

    # -- test / operator hooks --------------------------------------------------------------------------
    def servo(self, dxl_id: int) -> Servo:
        return self.servos[dxl_id]

    def inject_hardware_error(self, dxl_id: int, bits: int = 0x20) -> None:
        """Default bits = overload (Hardware Error Status bit 5)."""
        with self.lock:
            self.servos[dxl_id].shutdown(bits, time.monotonic())

    def grab(self, dxl_id: int, present_ticks: float, speed_ticks_s: float = GRAB_SPEED_TICKS_S) -> None:
        """An operator's hand takes hold of `dxl_id` and pulls it toward `present_ticks` (Present Position units)
        at `speed_ticks_s`, until release_grab(); whether it moves depends on the servo (see Servo.hand_overrides)."""
        with self.lock:
            now = time.monotonic()
            self.update(now)
            s = self.servos[dxl_id]
            s.grab_target, s.grab_speed = float(present_ticks), float(speed_ticks_s)

    def release_grab(self, dxl_id: int) -> None:
        """The hand lets go: a torque-off joint stays where it is, a servo with torque goes back to its goal."""
        with self.lock:
            now = time.monotonic()
            self.update(now)
            s = self.servos[dxl_id]
            s.grab_target = None
            if s.released_at is not None:  # a scripted HandMotion resumes from here, not from where it was
                s._release(now)

    def inject_fault(self, dxl_id: int, kind: str, count: int | None = None, delay_s: float = 0.05) -> None:
        """Make the next `count` replies (None = all, until cleared) of `dxl_id` go missing, corrupt or late."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r}; choose one of {FAULT_KINDS}")
        with self.lock:
            self.faults[dxl_id] = _Fault(kind, count, delay_s)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def remove(self, dxl_id: int) -> None:
        """Unplug a servo."""
        with self.lock:
            self.servos.pop(dxl_id, None)

    # -- bus behaviour ------------------------------------------------------------------------------------
    def update(self, now: float) -> None:
        for s in self.servos.values():
            s.update(now)
        for shadow, primary in self.couplings.items():
            sh, pr = self.servos.get(shadow), self.servos.get(primary)
            if sh is not None and pr is not None and ((not sh.torque and not pr.torque) or pr.hand_overrides):
                sh.shaft = ct.TICKS_PER_REV - pr.shaft  # the linkage carries a torque-off shadow along
                sh.velocity = -pr.velocity
                sh._refresh_present()

    def _alive(self, now: float) -> list[Servo]:
        return [s for s in self.servos.values() if s.booting_until <= now]

    def handle(self, pkt: p.Packet, now: float) -> list[tuple[float, bytes]]:
        """Returns (delay from now in s, bytes) for every status packet, in bus order."""
        with self.lock:
            self.packets_handled += 1
            self.update(now)
            replies: list[tuple[Servo, int | None, bytes]] = []  # (servo, error, params) or (servo, None, frame)
            self._execute(pkt, now, replies)
            out: list[tuple[float, bytes]] = []
            t = 0.0
            for servo, err, params in replies:
                level = servo.table[ct.STATUS_RETURN_LEVEL[0]]
                if level == 0 and pkt.instruction != p.PING:
                    continue
                if level == 1 and pkt.instruction not in (p.PING, p.READ, p.SYNC_READ, p.BULK_READ,
                                                          p.FAST_SYNC_READ):
                    continue
                data = params if err is None else p.status_packet(servo.id, err | servo.error_byte(), params)
                t = max(t, servo.table[ct.RETURN_DELAY_TIME[0]] * 2e-6)
                fault = self.faults.get(servo.id)
                if fault is not None:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            del self.faults[servo.id]
                    if fault.kind == "no_reply":
                        continue
                    if fault.kind == "corrupt_crc":
                        data = data[:-1] + bytes((data[-1] ^ 0x5A,))
                    elif fault.kind == "late":
                        t += fault.delay_s
                out.append((t, data))
            return out

    def _targets(self, dxl_id: int, now: float) -> tuple[Servo | None, list[Servo]]:
        """The servo that answers for `dxl_id` (if any) and every servo that executes a write to it."""
        alive = self._alive(now)
        if dxl_id == p.BROADCAST_ID:
            return None, alive
        primary = next((s for s in alive if s.id == dxl_id), None)
        execs = [s for s in alive if s.id == dxl_id or s.secondary_id == dxl_id]
        return primary, execs

    def _execute(self, pkt: p.Packet, now: float, replies: list) -> None:
        inst, prm = pkt.instruction, pkt.params
        if not pkt.crc_ok:
            primary, _ = self._targets(pkt.id, now)
            if primary is not None:
                replies.append((primary, p.ERR_CRC, b""))
            return
        if inst in (p.SYNC_READ, p.FAST_SYNC_READ, p.SYNC_WRITE, p.BULK_READ, p.BULK_WRITE, p.FAST_BULK_READ):
            if pkt.id == p.BROADCAST_ID:
                getattr(self, f"_{_GROUP_NAMES[inst]}")(prm, now, replies)
            return
        primary, execs = self._targets(pkt.id, now)
        broadcast = pkt.id == p.BROADCAST_ID
        if inst == p.PING:
            for s in ([primary] if primary else (execs if broadcast else [])):
                replies.append((s, 0, bytes((s.info.number & 0xFF, s.info.number >> 8, _FIRMWARE))))
        elif inst == p.READ:
            if primary is not None:
                if len(prm) != 4:
                    replies.append((primary, p.ERR_DATA_LENGTH, b""))
                else:
                    err, data = primary.read(prm[0] | prm[1] << 8, prm[2] | prm[3] << 8)
                    replies.append((primary, err, data))
        elif inst in (p.WRITE, p.REG_WRITE):
            if len(prm) < 3:
                if primary is not None:
                    replies.append((primary, p.ERR_DATA_LENGTH, b""))
                return
            addr, data = prm[0] | prm[1] << 8, bytes(prm[2:])
            err_primary = 0
            for s in execs:
                if inst == p.WRITE:
                    err = s.write(addr, data, now)
                else:
                    s.pending_write, err = (addr, data), 0
                if s is primary:
                    err_primary = err
            if primary is not None and not broadcast:
                replies.append((primary, err_primary, b""))
        elif inst == p.ACTION:
            for s in execs:
                if s.pending_write is not None:
                    s.write(*s.pending_write, now)
                    s.pending_write = None
            if primary is not None and not broadcast:
                replies.append((primary, 0, b""))
        elif inst == p.REBOOT:
            if primary is not None and not broadcast:
                replies.append((primary, 0, b""))
            for s in (execs if broadcast else [primary] if primary else []):
                s.reboot(now)
        else:  # factory reset, clear, unknown: not emulated
            if primary is not None and not broadcast:
                replies.append((primary, p.ERR_INSTRUCTION, b""))

    def _by_id(self, now: float) -> dict[int, Servo]:
        return {s.id: s for s in self._alive(now)}

    def _sync_read(self, prm: bytes, now: float, replies: list) -> None:
        if len(prm) < 5:
            return
        addr, length = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
        alive = self._by_id(now)
        for i in prm[4:]:
            s = alive.get(i)
            if s is None:
                break  # the next servo waits for a reply that never comes
            err, data = s.read(addr, length)
            replies.append((s, err, data))

    def _fast_sync_read(self, prm: bytes, now: float, replies: list) -> None:
        """One combined status packet (ID 0xFE): [ERR ID DATA CRC]... with the last CRC the packet's own."""
        if len(prm) < 5:
            return
        addr, length = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
        alive = self._by_id(now)
        servos = [alive.get(i) for i in prm[4:]]
        if not servos or any(s is None for s in servos):
            return
        body = bytearray()
        for k, s in enumerate(servos):
            err, data = s.read(addr, length)
            body += bytes((err | s.error_byte(), s.id)) + data.ljust(length, b"\0")
            if k < len(servos) - 1:
                c = p.crc16(body)
                body += bytes((c & 0xFF, c >> 8))
        n = len(body) + 3
        pkt = p.HEADER + bytes((p.BROADCAST_ID, n & 0xFF, n >> 8, p.STATUS)) + body
        c = p.crc16(pkt)
        replies.append((servos[0], None, pkt + bytes((c & 0xFF, c >> 8))))  # already framed

    def _sync_write(self, prm: bytes, now: float, replies: list) -> None:
        if len(prm) < 4:
            return
        addr, length = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
        body = prm[4:]
        servos = self._alive(now)
        for k in range(0, len(body) - length, length + 1):
            target, data = body[k], bytes(body[k + 1:k + 1 + length])
            for s in servos:
                if s.id == target or s.secondary_id == target:
                    s.write(addr, data, now)

    def _bulk_read(self, prm: bytes, now: float, replies: list) -> None:
        alive = self._by_id(now)
        for k in range(0, len(prm) - 4, 5):
            s = alive.get(prm[k])
            if s is None:
                break
            err, data = s.read(prm[k + 1] | prm[k + 2] << 8, prm[k + 3] | prm[k + 4] << 8)
            replies.append((s, err, data))

    def _bulk_write(self, prm: bytes, now: float, replies: list) -> None:
        k = 0
        servos = self._alive(now)
        while k + 5 <= len(prm):
            target, addr, length = prm[k], prm[k + 1] | prm[k + 2] << 8, prm[k + 3] | prm[k + 4] << 8
            data = bytes(prm[k + 5:k + 5 + length])
            k += 5 + length
            for s in servos:
                if s.id == target or s.secondary_id == target:
                    s.write(addr, data, now)

    def _fast_bulk_read(self, prm: bytes, now: float, replies: list) -> None:
        pass  # not used by the driver; a real servo without support would also stay silent


_GROUP_NAMES = {p.SYNC_READ: "sync_read", p.FAST_SYNC_READ: "fast_sync_read", p.SYNC_WRITE: "sync_write",
                p.BULK_READ: "bulk_read", p.BULK_WRITE: "bulk_write", p.FAST_BULK_READ: "fast_bulk_read"}


# -- pseudo-terminal transport ---------------------------------------------------------------------------------

class PtyPort:
    """A pty pair. The driver opens `path` (the slave) like a U2D2; the emulator owns `master`.

    The slave fd stays open here so the master never sees EIO while no driver is connected.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


CONTROL_METHODS = ("inject_hardware_error", "inject_fault", "clear_faults", "remove", "grab", "release_grab")


class EmulatorServer:
    """Serves one or more ServoChains, each on its own pty, from one select loop (thread or process)."""

    def __init__(self, chains: list[ServoChain], linger_s: float = 0.0):
        self.chains = chains
        # after a packet, keep polling (no sleep) this long: a control tick sends its packets in a burst, and
        # waking a sleeping process for each one costs far more than the poll on a busy machine
        self.linger_s = linger_s
        self.ports = [PtyPort() for _ in chains]
        self._parsers = [p.PacketParser() for _ in chains]
        self._queues: list[list[tuple[float, bytes]]] = [[] for _ in chains]
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def paths(self) -> list[str]:
        return [port.path for port in self.ports]

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start_thread(self) -> "EmulatorServer":
        self._thread = threading.Thread(target=self.serve, name="dxl-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for port in self.ports:
            port.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "EmulatorServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- loop ------------------------------------------------------------------------------------------------
    def serve(self, control=None) -> None:
        """Run until stop() (or a "stop" message on the `control` multiprocessing Connection)."""
        masters = {port.master: i for i, port in enumerate(self.ports)}
        rlist = list(masters) + [self._wake_r] + ([control.fileno()] if control is not None else [])
        active_until = 0.0
        while not self._stopped:
            due = [q[0][0] for q in self._queues if q]
            now = time.monotonic()
            timeout = max(0.0, min(due) - now) if due else None
            if now < active_until:
                timeout = 0.0 if timeout is None else min(timeout, 0.0)
            try:
                ready, _, _ = select.select(rlist, [], [], timeout)
            except (OSError, ValueError):
                return
            for fd in ready:
                if fd in masters:
                    self._receive(masters[fd])
                    active_until = time.monotonic() + self.linger_s
                elif fd == self._wake_r:
                    return
                elif control is not None and self._control(control):
                    return
            self._flush()

    def _receive(self, i: int) -> None:
        try:
            data = os.read(self.ports[i].master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        now = time.monotonic()
        queue = self._queues[i]
        for pkt in self._parsers[i].feed(data):
            for delay, frame in self.chains[i].handle(pkt, now):
                queue.append((now + delay, frame))
        if len(queue) > 1:
            queue.sort(key=lambda item: item[0])

    def _flush(self) -> None:
        now = time.monotonic()
        for i, queue in enumerate(self._queues):
            if not queue or queue[0][0] > now:
                continue
            k = 0
            while k < len(queue) and queue[k][0] <= now:
                k += 1
            out = b"".join(frame for _, frame in queue[:k])
            del queue[:k]
            try:
                os.write(self.ports[i].master, out)
            except OSError:
                pass  # nobody listening and the pty buffer is full: the bytes are lost, as on a real bus

    def _control(self, conn) -> bool:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return True
        if msg == "stop":
            return True
        name, index, args, kwargs = msg
        try:
            if name not in CONTROL_METHODS:
                raise ValueError(f"unknown emulator control {name!r}")
            conn.send(("ok", getattr(self.chains[index], name)(*args, **kwargs)))
        except Exception as exc:  # report to the caller, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return False


def make_chain(motors: Iterable[tuple[int, str]], couplings: dict[int, int] | None = None,
               shafts: dict[int, float] | None = None, hands: dict[int, HandMotion] | None = None,
               boot_time_s: float = 0.02, stops: dict[int, tuple[float, float]] | None = None) -> ServoChain:
    """Convenience: servos from (id, model name) pairs with optional starting shaft angles, hand motions and
    mechanical stops (shaft ticks)."""
    shafts, hands, stops = shafts or {}, hands or {}, stops or {}
    return ServoChain([Servo(i, m, shafts.get(i, ct.CENTER_TICK), hands.get(i), boot_time_s, stops.get(i))
                       for i, m in motors],
                      couplings)
