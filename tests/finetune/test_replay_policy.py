"""The replay policy: a recorded sim episode served by step through the real transform chain (training's defaults,
norm stats over the episode), exactly the recorded actions back when the live state is the recorded one. Serving it
(what is served, over the wire) is tests/serving's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.model_config import Pi0Config
from finetune.replay_policy import REPLAY_FILE, ReplayPolicy, is_replay_folder, make_replay_policy
from finetune.runtime import RigMismatchError
from finetune.transforms import PolicyTransforms, TransformConfig
from recorder.reader import EpisodeReader
from train_helpers import sim_dataset
from workbench.config import load_rig_config, parse_rig_config, preset_text


@pytest.fixture(scope="module")
def episode() -> Path:
    return sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[0]


@pytest.fixture(scope="module")
def folder(episode, tmp_path_factory) -> Path:
    return make_replay_policy(episode, tmp_path_factory.mktemp("replay") / "policy", horizon=50)


@pytest.fixture(scope="module")
def replay(folder) -> ReplayPolicy:
    return ReplayPolicy.load(folder)


def test_folder_layout_and_training_transforms(folder, episode, replay):
    assert {REPLAY_FILE, "transforms.json", "norm_stats.json", "rig.json"} <= {p.name for p in folder.iterdir()}
    assert is_replay_folder(folder) and isinstance(replay, ReplayPolicy)
    # the chain training uses for this rig (finetune.data: TransformConfig.for_model, delta joints)
    assert TransformConfig.load(folder) == TransformConfig.for_model(Pi0Config(), delta_actions=True)
    meta = replay.metadata()
    assert meta["replay"] is True and meta["policy_type"] == "replay" and meta["rig"] == "sim-transfer-cube"
    assert meta["action_horizon"] == 50 and meta["action_dim"] == 14 and meta["task"] == "transfer the cube"
    with EpisodeReader(episode) as r:
        qpos, action = r.qpos, r.action
    assert meta["episode_steps"] == len(qpos)
    # targets stored in model space: the training dataset's mapping relative to the recorded state
    pt = PolicyTransforms.from_folder(folder)
    t = 17
    np.testing.assert_allclose(replay.model_chunks[t], pt.state_actions(qpos[t], action[t:t + 50]).actions)
    assert np.abs(replay.model_chunks).max() < 50  # normalized, not rig units


def test_recorded_actions_come_back_exactly_at_the_recorded_state(replay, episode):
    with EpisodeReader(episode) as r:
        qpos, action = np.asarray(r.qpos, np.float64), np.asarray(r.action, np.float64)
    T = len(qpos)
    for t in range(0, T + 20, 3):
        s = qpos[min(t, T - 1)]
        out = replay.infer(s, {}, "transfer the cube", step=t)
        want = action[np.minimum(np.arange(t, t + 50), T - 1)]
        assert out.shape == (50, 14)
        np.testing.assert_allclose(out, want, atol=1e-5, rtol=0, err_msg=f"step {t}")
    # prefix/delay (real-time chunking) are accepted and do not change a deterministic replay
    np.testing.assert_array_equal(replay.infer(qpos[5], {}, "", step=5, prefix=action[5:9], delay=2),
                                  replay.infer(qpos[5], {}, "", step=5))


def test_delta_joints_follow_the_live_state_grippers_do_not(replay):
    state, want = replay.recorded(30)
    d = np.zeros(14)
    d[[1, 8]] = [0.1, -0.05]  # left shoulder, right shoulder (arm joints: delta)
    d[[6, 13]] = [0.2, 0.3]  # grippers: absolute
    out = replay.infer(state + d, {}, "", step=30)
    shift = out - want
    np.testing.assert_allclose(shift[:, 1], 0.1, atol=1e-5)
    np.testing.assert_allclose(shift[:, 8], -0.05, atol=1e-5)
    np.testing.assert_allclose(shift[:, [0, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13]], 0.0, atol=1e-5)


def test_infer_without_step_is_a_clear_error_and_bad_inputs_are_refused(replay):
    state, _ = replay.recorded(0)
    with pytest.raises(ValueError, match="step"):
        replay.infer(state, {}, "x")
    with pytest.raises(ValueError, match="step"):
        replay.infer(state, {}, "x", step=-1)
    with pytest.raises(ValueError, match="state"):
        replay.infer(state[:7], {}, "x", step=0)


def test_rig_check_and_unsupported_format(folder, tmp_path):
    assert isinstance(ReplayPolicy.load(folder, rig=load_rig_config("sim-transfer-cube")), ReplayPolicy)
    other = parse_rig_config(preset_text("sim-transfer-cube").replace("[cameras.cam_right_wrist]",
                                                                      "[cameras.cam_low]"), "<test>")
    with pytest.raises(RigMismatchError, match="cam_right_wrist"):
        ReplayPolicy.load(folder, rig=other)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / REPLAY_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="unsupported replay format"):
        ReplayPolicy.load(bad)
