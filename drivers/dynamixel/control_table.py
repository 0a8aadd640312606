"""X-series control table addresses, per-model facts and unit conversions (ROBOTIS e-manual values).

XM430-W350, XM540-W270, XL430-W250 and XC430-W150 share every address ALOHA uses; they differ in model number,
default current limit and the operating modes they support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# -- addresses: (address, size) ------------------------------------------------------------------------------
MODEL_NUMBER = (0, 2)
FIRMWARE_VERSION = (6, 1)
ID = (7, 1)
BAUD_RATE = (8, 1)
RETURN_DELAY_TIME = (9, 1)
DRIVE_MODE = (10, 1)
OPERATING_MODE = (11, 1)
SECONDARY_ID = (12, 1)
HOMING_OFFSET = (20, 4)
TEMPERATURE_LIMIT = (31, 1)
PWM_LIMIT = (36, 2)
CURRENT_LIMIT = (38, 2)
VELOCITY_LIMIT = (44, 4)
MAX_POSITION_LIMIT = (48, 4)
MIN_POSITION_LIMIT = (52, 4)
SHUTDOWN = (63, 1)
TORQUE_ENABLE = (64, 1)
LED = (65, 1)
STATUS_RETURN_LEVEL = (68, 1)
HARDWARE_ERROR_STATUS = (70, 1)
POSITION_D_GAIN = (80, 2)
POSITION_I_GAIN = (82, 2)
POSITION_P_GAIN = (84, 2)
GOAL_PWM = (100, 2)  # in every position mode also the limit of the position controller's PWM output
GOAL_CURRENT = (102, 2)
GOAL_VELOCITY = (104, 4)
PROFILE_ACCELERATION = (108, 4)
PROFILE_VELOCITY = (112, 4)
GOAL_POSITION = (116, 4)
MOVING = (122, 1)
PRESENT_CURRENT = (126, 2)
PRESENT_VELOCITY = (128, 4)
PRESENT_POSITION = (132, 4)
PRESENT_INPUT_VOLTAGE = (144, 2)
PRESENT_TEMPERATURE = (146, 1)

EEPROM_END = 64  # addresses below are writable only while Torque Enable = 0
TABLE_SIZE = 147
SIGNED = {HOMING_OFFSET[0], GOAL_PWM[0], GOAL_CURRENT[0], GOAL_VELOCITY[0], GOAL_POSITION[0], PRESENT_CURRENT[0],
          PRESENT_VELOCITY[0], PRESENT_POSITION[0]}

# The contiguous block one sync read returns for the control loop: current(2) velocity(4) position(4).
PRESENT_BLOCK = (PRESENT_CURRENT[0], 10)
PRESENT_BLOCK_DTYPE = np.dtype([("current", "<i2"), ("velocity", "<i4"), ("position", "<i4")])

# -- operating modes -------------------------------------------------------------------------------------------
MODE_CURRENT, MODE_VELOCITY, MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_POSITION, MODE_PWM = 0, 1, 3, 4, 5, 16
PWM_MAX = 885  # PWM Limit factory default and maximum (100 % of the supply voltage)
BAUD_CODES = {9600: 0, 57600: 1, 115200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6, 4_500_000: 7}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    number: int
    current_limit: int  # default Current Limit (units of CURRENT_UNIT_MA); 0 where the model has no current sensing
    velocity_limit: int  # default Velocity Limit (0.229 rpm units)
    modes: frozenset[int]


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("XM430-W350", 1020, 1193, 200, frozenset({0, 1, 3, 4, 5, 16})),
        ModelInfo("XM540-W270", 1120, 2047, 128, frozenset({0, 1, 3, 4, 5, 16})),
        ModelInfo("XL430-W250", 1060, 0, 265, frozenset({1, 3, 4, 16})),
        ModelInfo("XC430-W150", 1070, 0, 230, frozenset({1, 3, 4, 16})),
    )
}
MODELS_BY_NUMBER: dict[int, ModelInfo] = {m.number: m for m in MODELS.values()}


def model_name(number: int) -> str:
    m = MODELS_BY_NUMBER.get(number)
    return m.name if m else f"unknown model {number}"


# -- units -------------------------------------------------------------------------------------------------------
TICKS_PER_REV = 4096
CENTER_TICK = 2048
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_REV
VELOCITY_UNIT_RPM = 0.229
RAD_S_PER_VELOCITY_UNIT = VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0
TICKS_S_PER_VELOCITY_UNIT = VELOCITY_UNIT_RPM * TICKS_PER_REV / 60.0
CURRENT_UNIT_MA = 2.69
VOLTAGE_UNIT_V = 0.1


def ticks_to_rad(ticks):
    """Present/goal position ticks -> rad (2048 = 0 rad). Works on scalars and numpy arrays."""
    return (np.asarray(ticks, dtype=np.float64) - CENTER_TICK) * RAD_PER_TICK if isinstance(ticks, np.ndarray) \
        else (ticks - CENTER_TICK) * RAD_PER_TICK


def rad_to_ticks(rad):
    """rad -> nearest position tick (ints; arrays give int64)."""
    if isinstance(rad, np.ndarray):
        return np.rint(rad / RAD_PER_TICK + CENTER_TICK).astype(np.int64)
    return int(round(rad / RAD_PER_TICK + CENTER_TICK))


def to_signed(value: int, size: int) -> int:
    bits = 8 * size
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def to_unsigned(value: int, size: int) -> int:
    return value & ((1 << (8 * size)) - 1)


def present_from_shaft(shaft_ticks: float, reverse: bool, homing_offset: int) -> float:
    """What a servo reports for a shaft angle: reverse drive mode mirrors it, the homing offset is added.

    `shaft_ticks` is the motor's own angle (2048 = centre) as it would read with drive mode 0 and offset 0.
    """
    return (TICKS_PER_REV - shaft_ticks if reverse else shaft_ticks) + homing_offset


def shaft_from_present(present_ticks: float, reverse: bool, homing_offset: int) -> float:
    p = present_ticks - homing_offset
    return TICKS_PER_REV - p if reverse else p
