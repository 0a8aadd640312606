"""One Dynamixel bus (a U2D2 on one serial port) over dynamixel-sdk, with explicit timeouts, retries and typed errors.

Why not the SDK's defaults: its packet timeout assumes the FTDI latency timer at 16 ms (>= 34 ms per timeout), and
its reads busy-poll a non-blocking port. `_Port` waits in select() instead (no CPU burnt, GIL released) and uses
`timeout_ms` on top of the wire time; the ALOHA udev rule sets latency_timer=1, and where it did not, `open()`
raises the timeout to fit and says so in the log. Hot-path sync reads use the SDK's packet handler directly
(GroupSyncRead drops each servo's error byte, which carries the hardware-alert bit the driver must surface).

Thread safety: every bus operation holds the bus lock, so a status poll from a GUI thread cannot interleave
packets with the control loop.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from typing import Sequence

import serial
from dynamixel_sdk import COMM_SUCCESS, PacketHandler, PortHandler

from drivers.dynamixel import control_table as ct
from drivers.dynamixel.layout import MotorSpec
from drivers.dynamixel.protocol import ERR_ACCESS, ERR_HARDWARE_ALERT, ERROR_NAMES
from drivers.errors import (CommunicationError, PortError, ServoAccessError, ServoHardwareError, ServoMissingError,
                            ServoModelError, ServoStatusError)

log = logging.getLogger(__name__)
_PH = PacketHandler(2.0)  # stateless


class _Port(PortHandler):
    """PortHandler with an explicit timeout and blocking-with-timeout reads (select) instead of busy polling."""

    def __init__(self, port_name: str, timeout_ms: float):
        super().__init__(port_name)
        self.timeout_ms = float(timeout_ms)
        self._fd = -1

    def setupPort(self, cflag_baud):  # noqa: N802 (SDK naming)
        ok = super().setupPort(cflag_baud)
        self._fd = self.ser.fileno()
        return ok

    def setPacketTimeout(self, packet_length):  # noqa: N802
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.timeout_ms

    def readPort(self, length):  # noqa: N802
        remaining = (self.packet_timeout - self.getTimeSinceStart()) * 1e-3
        if remaining > 0.0:
            ready, _, _ = select.select((self._fd,), (), (), remaining)
            if not ready:
                return b""
        try:
            return os.read(self._fd, length)
        except (BlockingIOError, InterruptedError):
            return b""

    def clearPort(self):  # noqa: N802
        # tcflush on the fd, without pyserial's property machinery
        import termios

        termios.tcflush(self._fd, termios.TCIFLUSH)


_RESULT_TEXT = {
    -3001: "timeout (no reply)",
    -3002: "corrupt reply (bad CRC or truncated packet)",
    -1001: "transmit failed",
    -1000: "port busy",
}


def _sdk_text(result: int) -> str:
    return _RESULT_TEXT.get(result) or _PH.getTxRxResult(result).replace("[TxRxResult] ", "")


class DynamixelBus:
    """Servos on one port. `motors` name every ID so errors can say which joint of which arm failed."""

    def __init__(self, port: str, motors: Sequence[MotorSpec], *, baudrate: int = 1_000_000,
                 timeout_ms: float = 10.0, retries: int = 2, name: str = "dynamixel"):
        self.port_name = port
        self.motors = {m.id: m for m in motors}
        self.baudrate = baudrate
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.name = name
        self.lock = threading.RLock()
        self._port: _Port | None = None

    # -- helpers for messages ----------------------------------------------------------------------------
    def joint(self, dxl_id: int) -> str:
        m = self.motors.get(dxl_id)
        return m.name if m else f"id{dxl_id}"

    def _where(self, dxl_id: int) -> str:
        return f"servo {dxl_id} ({self.joint(dxl_id)}) on {self.port_name}"

    # -- port --------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        if self.is_open:
            return
        hint = (f"check that the arm's U2D2 is plugged in and that the udev rule created {self.port_name} "
                f"(`ls -l /dev/ttyDXL_*`, rule keyed on the FTDI serial), and that you may open it "
                f"(`sudo usermod -aG dialout $USER`, then log in again)")
        if not os.path.exists(self.port_name):
            raise PortError(f"{self.name}: serial port {self.port_name} does not exist; {hint}.")
        port = _Port(self.port_name, self.timeout_ms)
        try:
            if not port.setBaudRate(self.baudrate):
                raise PortError(f"{self.name}: {self.baudrate} bps is not a baud rate the SDK supports "
                                f"(ALOHA uses 1000000)")
        except (serial.SerialException, OSError) as exc:
            code = getattr(exc, "errno", None)
            if code == errno.EACCES or "Permission denied" in str(exc):
                why = "permission denied"
            elif code == errno.EBUSY or "busy" in str(exc).lower():
                why = "the port is busy (another program, e.g. a second workbench or Dynamixel Wizard, has it open)"
            else:
                why = str(exc)
            raise PortError(f"{self.name}: cannot open {self.port_name}: {why}; {hint}.") from exc
        self._port = port
        self._check_latency_timer()

    def _check_latency_timer(self) -> None:
        dev = os.path.basename(os.path.realpath(self.port_name))
        path = f"/sys/bus/usb-serial/devices/{dev}/latency_timer"
        try:
            with open(path) as f:
                latency = int(f.read().strip())
        except (OSError, ValueError):
            return
        if latency > 1:
            log.warning("%s: %s has latency_timer=%d ms (every read waits that long); the ALOHA udev rule sets 1: "
                        "echo 1 | sudo tee %s", self.name, self.port_name, latency, path)
            self._port.timeout_ms = max(self._port.timeout_ms, 2.0 * latency + 2.0)

    def close(self) -> None:
        with self.lock:
            if self._port is not None:
                try:
                    self._port.closePort()
                except Exception:  # noqa: BLE001 - closing must not raise
                    pass
                self._port = None

    def _p(self) -> _Port:
        if self._port is None:
            raise CommunicationError(f"{self.name}: bus {self.port_name} is not open")
        return self._port

    # -- single-servo instructions ------------------------------------------------------------------------
    def _retry(self, what: str, dxl_id: int, fn):
        """Run fn() -> (value, result, error) until the exchange succeeds; raise CommunicationError after retries."""
        port = self._p()
        result = COMM_SUCCESS
        for _ in range(self.retries + 1):
            value, result, error = fn(port)
            port.is_using = False
            if result == COMM_SUCCESS:
                return value, error
        raise CommunicationError(f"{self.name}: {what} {self._where(dxl_id)} failed after {self.retries + 1} "
                                 f"attempts: {_sdk_text(result)}")

    def _check_error(self, what: str, dxl_id: int, error: int, address: int | None = None) -> None:
        code = error & 0x7F
        if not code:
            return
        text = f"{self.name}: {self._where(dxl_id)} refused {what}: {ERROR_NAMES.get(code, f'error {code}')}"
        if code == ERR_ACCESS:
            if address is not None and address < ct.EEPROM_END:
                text += (f" (address {address} is EEPROM, writable only while the servo's torque is off: "
                         f"call set_torque(False) first)")
            raise ServoAccessError(text, dxl_id, code)
        raise ServoStatusError(text, dxl_id, code)

    def ping(self, dxl_id: int) -> int | None:
        """Model number, or None when nothing answers after the retries."""
        with self.lock:
            try:
                model, _ = self._retry("ping of", dxl_id, lambda port: _PH.ping(port, dxl_id))
            except CommunicationError:
                return None
            return model

    def check_motors(self) -> None:
        """Ping every configured ID and compare model numbers; errors name the port, the ID and the fix."""
        missing = []
        for m in self.motors.values():
            model = self.ping(m.id)
            if model is None:
                missing.append(m)
            elif model != m.model_number:
                raise ServoModelError(
                    f"{self.name}: {self._where(m.id)} is a {ct.model_name(model)} (model {model}), but the "
                    f"layout expects a {m.model} (model {m.model_number}): is this the right arm on this port "
                    f"(udev names), and the right `model` in the rig file?")
        if missing and len(missing) == len(self.motors):
            raise ServoMissingError(
                f"{self.name}: no servo answered on {self.port_name} at {self.baudrate} bps (IDs "
                f"{', '.join(str(m.id) for m in missing)}): check the arm's 12 V power supply, the cable from "
                f"the U2D2 to the first servo, and that this port belongs to this arm.")
        if missing:
            ids = ", ".join(f"{m.id} ({m.name})" for m in missing)
            raise ServoMissingError(
                f"{self.name}: servo ID {ids} did not answer a ping on {self.port_name} at {self.baudrate} bps; "
                f"the others did: check the daisy-chain cable into that servo and its ID/baud rate "
                f"(Dynamixel Wizard).")

    def read(self, dxl_id: int, reg: tuple[int, int]) -> int:
        addr, size = reg
        fn = {1: _PH.read1ByteTxRx, 2: _PH.read2ByteTxRx, 4: _PH.read4ByteTxRx}[size]
        with self.lock:
            value, error = self._retry(f"read of address {addr} from", dxl_id, lambda port: fn(port, dxl_id, addr))
            self._check_error(f"a read of address {addr}", dxl_id, error, addr)
        return ct.to_signed(value, size) if addr in ct.SIGNED else value

    def write(self, dxl_id: int, reg: tuple[int, int], value: int) -> None:
        addr, size = reg
        fn = {1: _PH.write1ByteTxRx, 2: _PH.write2ByteTxRx, 4: _PH.write4ByteTxRx}[size]
        raw = ct.to_unsigned(int(value), size)
        with self.lock:
            _, error = self._retry(f"write of address {addr} to", dxl_id,
                                   lambda port: (None,) + tuple(fn(port, dxl_id, addr, raw)))
            self._check_error(f"writing {value} to address {addr}", dxl_id, error, addr)

    def hardware_error(self, dxl_id: int) -> int:
        return self.read(dxl_id, ct.HARDWARE_ERROR_STATUS)

    def reboot(self, dxl_id: int, wait_s: float = 1.0) -> None:
        """REBOOT (clears a hardware-error shutdown; RAM returns to defaults) and wait until the servo answers."""
        with self.lock:
            self._retry("reboot of", dxl_id, lambda port: (None,) + tuple(_PH.reboot(port, dxl_id)))
            deadline = time.monotonic() + wait_s
            while True:
                time.sleep(0.005)
                port = self._p()
                _, result, _ = _PH.ping(port, dxl_id)
                port.is_using = False
                if result == COMM_SUCCESS:
                    return
                if time.monotonic() > deadline:
                    raise CommunicationError(f"{self.name}: {self._where(dxl_id)} did not come back within "
                                             f"{wait_s:.1f} s after REBOOT")

    # -- group instructions -------------------------------------------------------------------------------
    def sync_read(self, ids: Sequence[int], reg: tuple[int, int] | tuple[int, int], *,
                  raise_on_alert: bool = True) -> tuple[bytearray, list[int]]:
        """One SYNC READ of `length` bytes at `addr` from each ID: (concatenated data in ID order, error bytes).

        A servo whose status carries the hardware-alert bit raises ServoHardwareError (unless raise_on_alert is
        False). Timeouts and corrupt replies are retried; the error names the first servo that did not answer.
        """
        addr, length = reg
        param = list(ids)
        n = len(param)
        with self.lock:
            port = self._p()
            result, failed = COMM_SUCCESS, param[0]
            for _ in range(self.retries + 1):
                result = _PH.syncReadTx(port, addr, length, param, n, False)
                if result != COMM_SUCCESS:
                    port.is_using = False
                    continue
                buf, errors = bytearray(), []
                for dxl_id in param:
                    data, result, error = _PH.readRx(port, dxl_id, length)
                    if result != COMM_SUCCESS or len(data) != length:
                        failed = dxl_id
                        if result == COMM_SUCCESS:
                            result = -3002
                        break
                    buf += bytes(data)
                    errors.append(error)
                else:
                    break
                port.is_using = False
            else:
                raise CommunicationError(
                    f"{self.name}: sync read of address {addr} on {self.port_name} failed after "
                    f"{self.retries + 1} attempts: {_sdk_text(result)} from servo {failed} ({self.joint(failed)})")
            for dxl_id, error in zip(param, errors):
                if error & ERR_HARDWARE_ALERT and raise_on_alert:
                    raise ServoHardwareError(self.name, self.joint(dxl_id), dxl_id, self.hardware_error(dxl_id))
                if error & 0x7F:
                    self._check_error(f"a sync read of address {addr}", dxl_id, error, addr)
            return buf, errors

    def sync_write_raw(self, reg: tuple[int, int], param: list[int]) -> None:
        """SYNC WRITE with a prebuilt parameter list [id, data bytes..., id, ...] (no reply on the bus)."""
        addr, length = reg
        with self.lock:
            port = self._p()
            result = COMM_SUCCESS
            for _ in range(self.retries + 1):
                result = _PH.syncWriteTxOnly(port, addr, length, param, len(param))
                port.is_using = False
                if result == COMM_SUCCESS:
                    return
            raise CommunicationError(f"{self.name}: sync write of address {addr} on {self.port_name} failed: "
                                     f"{_sdk_text(result)}")

    def sync_write(self, reg: tuple[int, int], values: dict[int, int]) -> None:
        addr, size = reg
        param: list[int] = []
        for dxl_id, value in values.items():
            param.append(dxl_id)
            param.extend(ct.to_unsigned(int(value), size).to_bytes(size, "little"))
        self.sync_write_raw(reg, param)
