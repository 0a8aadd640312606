"""Test-wide environment: Qt offscreen, MuJoCo's renderer chosen before any import of mujoco; the real SLURM and
its login node shared by the cluster tests of every folder (started once, only when a test asks)."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "osmesa"


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM (slurmctld, slurmd, munge) on loopback: tests/finetune/slurm_helpers.py."""
    sys.path.insert(0, str(Path(__file__).parent / "finetune"))
    from slurm_helpers import start_slurm
    from slurm_helpers import why_not as slurm_missing
    from ssh_helpers import why_not as sshd_missing

    reason = slurm_missing() or sshd_missing()
    if reason:
        pytest.skip(reason)
    s = start_slurm()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def login(slurm, tmp_path_factory):
    """The login node: sshd on loopback, whose sessions see the test SLURM (SLURM_CONF)."""
    from ssh_helpers import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("ssh"), {"SLURM_CONF": str(slurm.conf), "OMP_NUM_THREADS": "1",
                                                         "HF_HUB_OFFLINE": "1"})
    yield server
    server.stop()
