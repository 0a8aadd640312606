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
