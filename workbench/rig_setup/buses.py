"""What is on a Dynamixel bus: ping the arm's IDs at its baud rate (the real dynamixel-sdk), read the model
numbers, and recognize an ALOHA leader (WidowX 250 6DoF, wx250s) or follower (ViperX 300 6DoF, vx300s).

A bus is recognized as the arm model whose layout matches most of the servos that answered; every ID that
did not answer and every servo of another model is named, with the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from drivers.arm import JOINT_NAMES
from drivers.dynamixel import control_table as ct
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.layout import ARM_MODELS, MotorSpec, default_layout
from drivers.errors import DriverError

ARM_ROLE = {"wx250s": "leader", "vx300s": "follower"}
ALOHA_BAUDRATE = 1_000_000


@dataclass(frozen=True)
class ServoProblem:
    id: int
    joint: str
    kind: str  # "missing" | "wrong_model"
    expected: str  # servo model the arm's layout has at this ID
    found: str | None = None  # what answered (wrong_model)

    def describe(self, port: str) -> str:
        if self.kind == "missing":
            return (f"servo ID {self.id} ({self.joint}, a {self.expected}) did not answer on {port}: check the "
                    f"daisy-chain cable into it, its ID and baud rate (Dynamixel Wizard)")
        return (f"servo ID {self.id} ({self.joint}) is a {self.found}, but this arm has a {self.expected} there: "
                f"a servo swapped in from another arm, or a wrong ID")


@dataclass(frozen=True)
class BusReport:
    port: str
    baudrate: int
    found: dict[int, int]  # id -> model number, for every ID that answered
    model: str | None  # "wx250s" | "vx300s" | None (nothing answered or nothing matched)
    problems: tuple[ServoProblem, ...] = ()
    error: str | None = None  # the port could not be opened

    @property
    def role(self) -> str | None:
        return ARM_ROLE.get(self.model) if self.model else None

    @property
    def ok(self) -> bool:
        return self.model is not None and not self.problems and self.error is None

    def describe(self) -> str:
        if self.error:
            return f"{self.port}: {self.error}"
        if not self.found:
            return (f"{self.port}: no servo answered at {self.baudrate} bps: check the arm's 12 V supply and the "
                    f"cable from the U2D2 to the first servo")
        servos = ", ".join(f"{i}:{ct.model_name(n)}" for i, n in sorted(self.found.items()))
        head = (f"{self.port}: {self.role} arm ({self.model}), {len(self.found)} servos [{servos}]" if self.model
                else f"{self.port}: not an ALOHA arm: servos [{servos}]")
        return "\n".join([head] + [f"  {p.describe(self.port)}" for p in self.problems])


def _match(layout: Sequence[MotorSpec], found: dict[int, int]) -> int:
    return sum(1 for m in layout if found.get(m.id) == m.model_number)


def identify(found: dict[int, int]) -> tuple[str | None, tuple[ServoProblem, ...]]:
    """The arm model the answering servos belong to, and what is missing or of the wrong model."""
    if not found:
        return None, ()
    scores = {model: _match(default_layout(model), found) for model in ARM_MODELS}
    best = max(scores.values())
    winners = [m for m, s in scores.items() if s == best]
    if best == 0 or len(winners) > 1:
        return None, ()
    model = winners[0]
    problems = []
    for m in default_layout(model):
        got = found.get(m.id)
        if got is None:
            problems.append(ServoProblem(m.id, m.name, "missing", m.model))
        elif got != m.model_number:
            problems.append(ServoProblem(m.id, m.name, "wrong_model", m.model, ct.model_name(got)))
    return model, tuple(problems)


def scan_bus(port: str, *, baudrate: int = ALOHA_BAUDRATE, ids: Sequence[int] = range(1, 10),
             timeout_ms: float = 10.0, retries: int = 1) -> BusReport:
    """Ping `ids` on `port` (nothing is written to the servos) and identify the arm."""
    bus = DynamixelBus(port, [], baudrate=baudrate, timeout_ms=timeout_ms, retries=retries, name=f"bus {port}")
    try:
        bus.open()
    except DriverError as exc:
        return BusReport(port, baudrate, {}, None, (), str(exc))
    try:
        found = {}
        for i in ids:
            model = bus.ping(i)
            if model is not None:
                found[i] = model
    finally:
        bus.close()
    model, problems = identify(found)
    return BusReport(port, baudrate, found, model, problems)


class PositionReader:
    """Reads an identified arm's joint positions (rad, 7 primaries) without configuring or moving it: the
    "move one arm" step and the leader gripper calibration watch these."""

    def __init__(self, port: str, model: str, *, baudrate: int = ALOHA_BAUDRATE, timeout_ms: float = 10.0):
        layout = default_layout(model)
        by_name = {m.name: m for m in layout}
        self.ids = [by_name[j].id for j in JOINT_NAMES]
        self.bus = DynamixelBus(port, layout, baudrate=baudrate, timeout_ms=timeout_ms, name=f"{model} on {port}")

    def __enter__(self) -> "PositionReader":
        self.bus.open()
        return self

    def __exit__(self, *exc) -> None:
        self.bus.close()

    def read(self) -> np.ndarray:
        raw, _ = self.bus.sync_read(self.ids, ct.PRESENT_POSITION, raise_on_alert=False)
        return ct.ticks_to_rad(np.frombuffer(bytes(raw), dtype="<i4").astype(np.float64))
