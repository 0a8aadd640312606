"""PolicyRuntime: a trained policy folder -> finite rig actions [50, 14], deterministic for the same noise; a rig
that differs from the one the policy was trained for is refused, naming the difference."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from finetune.rig_check import RigDescription, compare_rigs
from finetune.runtime import PolicyRuntime, RigMismatchError, check_rig
from serve_helpers import tiny_policy
from workbench.config import load_rig_config


@pytest.fixture(scope="module")
def runtime() -> PolicyRuntime:
    return PolicyRuntime.load(tiny_policy(), device="cpu", rig=load_rig_config("sim-transfer-cube"))


def _obs(rt: PolicyRuntime, seed: int = 0):
    rng = np.random.default_rng(seed)
    state = rng.normal(0, 0.3, 14).astype(np.float32)
    return state, {c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in rt.cameras}


def test_infer_is_finite_and_deterministic_for_the_same_noise(runtime):
    state, images = _obs(runtime)
    noise = torch.randn(50, 32, generator=torch.Generator().manual_seed(3))
    a = runtime.infer(state, images, "transfer the cube", noise=noise)
    assert a.shape == (50, 14) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, runtime.infer(state, images, "transfer the cube", noise=noise.numpy()))
    assert np.array_equal(runtime.infer(state, images, "transfer the cube", seed=5),
                          runtime.infer(state, images, "transfer the cube", seed=5))
    assert not np.array_equal(a, runtime.infer(state, images, "transfer the cube", noise=noise + 0.5))
    # the same chain as training: transforms.observation -> sample_actions -> transforms.actions
    pol = runtime.policy
    obs = pol.transforms.observation(state, images, "transfer the cube")
    ref = pol.transforms.actions(pol.model.sample_actions(obs, noise=noise[None])[0], state)
    assert np.array_equal(a, ref)


def test_bad_inputs_are_value_errors(runtime):
    state, images = _obs(runtime)
    with pytest.raises(ValueError, match="state"):
        runtime.infer(state[:7], images, "x")
    with pytest.raises(ValueError, match="missing camera"):
        runtime.infer(state, {k: v for k, v in list(images.items())[1:]}, "x")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        runtime.infer(state, {**images, "cam_high": images["cam_high"].astype(np.float32)}, "x")
    with pytest.raises(ValueError, match="noise"):
        runtime.infer(state, images, "x", noise=np.zeros((50, 14)))


def test_a_different_rig_is_refused_naming_the_difference():
    rig = load_rig_config("sim-transfer-cube")
    other_grip = dataclasses.replace(rig, gripper=dataclasses.replace(
        rig.gripper, follower_joint_open=rig.gripper.follower_joint_open + 0.1))
    with pytest.raises(RigMismatchError, match="follower_joint_open"):
        PolicyRuntime.load(tiny_policy(), rig=other_grip)
    desc = RigDescription.of(rig)
    with pytest.raises(RigMismatchError, match=r"cameras.*missing \['cam_right_wrist'\]"):
        PolicyRuntime.load(tiny_policy(), rig=dataclasses.replace(desc, cameras=desc.cameras[:2]))
    with pytest.raises(RigMismatchError, match="joint layout"):
        PolicyRuntime.load(tiny_policy(), rig=dataclasses.replace(desc, joint_names=desc.joint_names[::-1]))


# -- issue 19.9: control rate, backend kind, what could not be checked, the metadata a server announces ----------

def _rig_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rig check")]


def test_a_different_control_rate_is_refused():
    rig = load_rig_config("sim-transfer-cube")
    with pytest.raises(RigMismatchError, match=r"control rate: policy trained at 50 Hz, rig runs at 25 Hz"):
        PolicyRuntime.load(tiny_policy(), rig=dataclasses.replace(rig, control_hz=25.0))


def test_a_sim_policy_on_real_arms_is_refused_unless_allowed(caplog):
    real = dataclasses.replace(RigDescription.of(load_rig_config("sim-transfer-cube")), backend="dynamixel",
                               name="aloha")
    folder = tiny_policy()  # trained on the sim rig
    with pytest.raises(RigMismatchError, match=r"simulated 'sim' backend.*real arms.*sim-to-real.*--allow-sim-policy"):
        check_rig(folder, real, "policy {folder} was trained for", allow_sim_policy=False)
    with caplog.at_level(logging.INFO, logger="finetune.runtime"):
        assert check_rig(folder, real, "policy {folder} was trained for", allow_sim_policy=True).backend == "sim"
        check_rig(folder, real, "policy {folder} was trained for")  # the server's default: noted, not refused
    allowed, server = _rig_lines(caplog)
    assert "backend (sim -> dynamixel)" in allowed and "allowed by --allow-sim-policy" in allowed
    assert "the robot side refuses it unless --allow-sim-policy" in server
    # a simulated rig is no risk: sim -> virtual passes without a note
    assert compare_rigs(load_rig_config("sim-transfer-cube"), load_rig_config("virtual")).notes == []


def test_the_report_says_what_was_checked_and_what_could_not_be(tmp_path, caplog):
    rig = load_rig_config("sim-transfer-cube")
    with caplog.at_level(logging.INFO, logger="finetune.runtime"):
        check_rig(tiny_policy(), rig, "policy {folder} was trained for")
    (line,) = _rig_lines(caplog)
    assert line.startswith("rig check OK") and "NOT checked" not in line
    for what in ("cameras ['cam_high', 'cam_left_wrist', 'cam_right_wrist']", "joint layout (14 joints)",
                 "control rate (50 Hz)", "backend (sim -> sim)", "gripper constants"):
        assert what in line
    # an imported episode set's snapshot: no gripper constants, no backend, no rate -> said, not silently passed
    snap = json.loads((tiny_policy() / "rig.json").read_text())
    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / "rig.json").write_text(json.dumps({**snap, "gripper": None, "gripper_set": "unknown",
                                                 "backend": "unknown", "control_hz": None}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="finetune.runtime"):
        check_rig(folder, rig, "policy {folder} was trained for")
    (line,) = _rig_lines(caplog)
    assert caplog.records[-1].levelno == logging.WARNING
    assert ("NOT checked: control rate (unknown for the policy); backend kind (unknown for the policy); "
            "gripper constants (unknown for the policy)") in line
    # and a refusal names what it could not check as well
    with pytest.raises(RigMismatchError, match=r"(?s)cameras.*not checked: control rate"):
        check_rig(folder, dataclasses.replace(RigDescription.of(rig), cameras=("cam_high",)), "policy {folder} was")


def test_metadata_announces_what_the_robot_side_checks(runtime):
    from drivers.arm import BIMANUAL_JOINT_NAMES
    from drivers.gripper import GRIPPER_PRESETS
    from serving.protocol import packb, unpackb

    meta = unpackb(packb(runtime.metadata()))  # as a client receives it
    assert meta["control_hz"] == 50 and meta["backend"] == "sim" and meta["gripper_set"] == "aloha1"
    assert meta["cameras"] == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    assert meta["joint_names"] == list(BIMANUAL_JOINT_NAMES)
    assert meta["gripper"] == dataclasses.asdict(GRIPPER_PRESETS["aloha1"])
    check = compare_rigs(meta, load_rig_config("sim-transfer-cube"))
    assert check.ok and check.unchecked == [] and check.rig == "sim-transfer-cube"
    # an older server's metadata (cameras only): the rest is reported as not checked
    old = compare_rigs({"cameras": meta["cameras"], "rig": "x"}, load_rig_config("sim-transfer-cube"))
    assert old.ok and [u.split(" (")[0] for u in old.unchecked] == ["joint layout", "control rate", "backend kind",
                                                                      "gripper constants"]
