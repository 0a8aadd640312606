"""Shared fixtures of tests/drivers. Fixtures prefixed `dxl_` belong to the Dynamixel tests (test_dynamixel_*)."""
from __future__ import annotations

import pytest


@pytest.fixture
def dxl_chains():
    """Factory: an emulated ALOHA arm chain served on a pty (thread) -> (chain, pty path). Stopped after the test.

    make(model="vx300s", missing=(ids...), models={id: "XL430-W250"}) -> (ServoChain, path)
    """
    from drivers.dynamixel.emulator import EmulatorServer, make_chain
    from drivers.dynamixel.layout import SHADOW_PAIRS, default_layout

    servers = []

    def make(model: str = "vx300s", missing=(), models=None, boot_time_s: float = 0.01):
        models = models or {}
        motors = [(m.id, models.get(m.id, m.model)) for m in default_layout(model) if m.id not in missing]
        chain = make_chain(motors, SHADOW_PAIRS, boot_time_s=boot_time_s)
        server = EmulatorServer([chain]).start_thread()
        servers.append(server)
        return chain, server.paths[0]

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def dxl_arm(dxl_chains):
    """Factory: a connected DynamixelArm on a fresh emulated chain -> (arm, chain). Disconnected after the test."""
    from drivers.dynamixel_arm import DynamixelArm, DynamixelArmConfig

    arms = []

    def make(role: str = "follower", model: str | None = None, **config):
        model = model or ("vx300s" if role == "follower" else "wx250s")
        chain, path = dxl_chains(model)
        config.setdefault("timeout_ms", 30.0)  # 2 shared CI cores: be patient, the retries stay explicit
        arm = DynamixelArm(DynamixelArmConfig(name=f"{role}_left", role=role, port=path, model=model, **config))
        arm.connect()
        arms.append(arm)
        return arm, chain

    yield make
    for a in arms:
        a.disconnect()
