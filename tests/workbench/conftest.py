"""Shared rigs for workbench tests: the virtual rig runs the real dynamixel-sdk against emulated servo chains."""
import pytest

from workbench.config import load_rig_config
from workbench.backends import build_rig


@pytest.fixture(scope="module")
def virtual_rig():
    rig = build_rig(load_rig_config("virtual"))
    rig.connect()
    yield rig
    rig.disconnect()


@pytest.fixture(scope="module")
def sim_rig():
    rig = build_rig(load_rig_config("sim-transfer-cube"))
    rig.connect()
    yield rig
    rig.disconnect()


@pytest.fixture(scope="module")
def sim_session():
    """A RigSession on the simulated cube-transfer rig, shared by a module's trial tests."""
    from workbench.session import RigSession

    rig = build_rig(load_rig_config("sim-transfer-cube"))
    rig.connect()
    s = RigSession(rig)
    yield s
    s.close(torque_off_here=True)
