"""PolicyRuntime: a trained policy folder -> finite rig actions [50, 14], deterministic for the same noise; a rig
that differs from the one the policy was trained for is refused, naming the difference."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from finetune.runtime import PolicyRuntime, RigDescription, RigMismatchError
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
