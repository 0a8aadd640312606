"""Typed driver errors: each says what failed, where, and what to do about it."""
from __future__ import annotations


class DriverError(RuntimeError):
    """Base of every hardware/simulator error the workbench can show an operator."""


class PortError(DriverError):
    """A serial port could not be opened or configured (wrong path, permissions, unplugged)."""


class CommunicationError(DriverError):
    """A packet exchange failed after its retries (timeout, corrupt reply)."""


class ServoMissingError(DriverError):
    """A configured servo ID did not answer a ping."""


class ServoModelError(DriverError):
    """A servo answered with a model number other than the configured one."""


HARDWARE_ERROR_BITS = {
    0: "input voltage error",
    2: "overheating",
    3: "motor encoder error",
    4: "electrical shock",
    5: "overload",
}


def describe_hardware_error(bits: int) -> str:
    names = [name for bit, name in HARDWARE_ERROR_BITS.items() if bits & (1 << bit)]
    return ", ".join(names) if names else f"unknown hardware error 0x{bits:02x}"


class ServoHardwareError(DriverError):
    """A servo reported a hardware alert (overload, overheating, voltage...); torque is off until reboot."""

    def __init__(self, arm: str, joint: str, servo_id: int, bits: int):
        self.arm, self.joint, self.servo_id, self.bits = arm, joint, servo_id, bits
        super().__init__(
            f"{arm}: servo {servo_id} ({joint}) reports {describe_hardware_error(bits)}; "
            f"its torque is off. Remove the load, then reboot the servo (GUI: Rig > reboot, "
            f"CLI: `workbench rig reboot --arm {arm} --joint {joint}`)."
        )


class ServoStatusError(DriverError):
    """A servo answered but refused an instruction (the error code of its status packet: range, limit...)."""

    def __init__(self, message: str, servo_id: int | None = None, code: int = 0):
        self.servo_id, self.code = servo_id, code
        super().__init__(message)


class ServoAccessError(ServoStatusError):
    """A servo refused a read/write of an address (e.g. an EEPROM address, < 64, while its torque is on)."""


class CameraError(DriverError):
    """A camera could not be opened, or its stream failed."""


class CameraStalledError(CameraError):
    """A camera stopped delivering frames for longer than its timeout."""


class SafetyError(DriverError):
    """A command was refused by the safety layer (non-finite values, e-stop engaged...)."""


class CameraNotFoundError(CameraError):
    """A configured camera is not connected (wrong /dev path or index, wrong serial, unplugged)."""


class CameraModeError(CameraError):
    """A camera cannot deliver the configured resolution/fps/format; the message lists what it can do."""
