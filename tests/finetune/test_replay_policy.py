"""The replay policy: a recorded sim episode served by step through the real transform chain (training's defaults,
norm stats over the episode), exactly the recorded actions back when the live state is the recorded one; the wire
extensions (step, action_prefix, inference_delay) validated by the server and passed only when sent."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.config import Pi0Config
from finetune.replay_policy import (REPLAY_FILE, ReplayPolicy, is_replay_folder, load_served_policy,
                                    make_replay_policy)
from finetune.runtime import RigMismatchError
from finetune.serve import PolicyServer, ServeConfig, packb, parse_extensions
from finetune.serve_client import ServeClient, ServeError
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
    return load_served_policy(folder, device="cpu")


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


def test_rig_check_and_loader_dispatch(folder, tmp_path):
    assert isinstance(load_served_policy(folder, rig=load_rig_config("sim-transfer-cube")), ReplayPolicy)
    other = parse_rig_config(preset_text("sim-transfer-cube").replace("[cameras.cam_right_wrist]",
                                                                      "[cameras.cam_low]"), "<test>")
    with pytest.raises(RigMismatchError, match="cam_right_wrist"):
        load_served_policy(folder, rig=other)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / REPLAY_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="unsupported replay format"):
        load_served_policy(bad)


def test_parse_extensions_validates_and_passes_only_present_fields():
    shape = (50, 14)
    assert parse_extensions({"state": 1}, shape) == {}
    out = parse_extensions({"step": 3, "action_prefix": np.zeros((4, 14), np.float32), "inference_delay": 2}, shape)
    assert out["step"] == 3 and out["prefix"].shape == (4, 14) and out["prefix"].dtype == np.float64
    assert out["delay"] == 2
    assert parse_extensions({b"step": 0}, shape) == {"step": 0}
    assert parse_extensions({"action_prefix": [[0.0] * 14]}, shape)["prefix"].shape == (1, 14)
    bad = [({"step": -1}, "step"), ({"step": "3"}, "step"), ({"step": True}, "step"), ({"step": 1.5}, "step"),
           ({"action_prefix": np.zeros((4, 7))}, "action_prefix"), ({"action_prefix": np.zeros(14)}, "action_prefix"),
           ({"action_prefix": np.zeros((51, 14))}, "horizon"), ({"action_prefix": np.zeros((0, 14))}, "action_prefix"),
           ({"action_prefix": np.full((2, 14), np.nan)}, "non-finite"), ({"action_prefix": "x"}, "action_prefix"),
           ({"action_prefix": [["a"] * 14]}, "action_prefix"),
           ({"action_prefix": np.zeros((2, 14)), "inference_delay": 3}, "exceeds"),
           ({"inference_delay": 1}, "no action_prefix"), ({"inference_delay": -1}, "inference_delay")]
    from finetune.serve import ProtocolError

    for msg, match in bad:
        with pytest.raises(ProtocolError, match=match):
            parse_extensions(msg, shape)


class _Recorder:
    """A fake runtime that records the keyword arguments the server passes."""

    action_shape = (50, 14)

    def __init__(self, old: bool = False) -> None:
        self.calls: list[dict] = []
        if old:  # the openpi-era signature: no step, prefix or delay
            self.infer = self._old_infer  # type: ignore[method-assign]

    def metadata(self) -> dict:
        return {"policy": "recorder", "action_horizon": 50, "action_dim": 14, "cameras": ["cam_high"]}

    def infer(self, state, images, prompt, noise=None, *, seed=None, prefix=None, delay=0, step=None):
        self.calls.append({"seed": seed, "prefix": prefix, "delay": delay, "step": step})
        return np.zeros((50, 14), np.float32)

    def _old_infer(self, state, images, prompt, noise=None, *, seed=None):
        self.calls.append({"seed": seed})
        return np.zeros((50, 14), np.float32)


def _obs(**extra) -> dict:
    return {"state": np.zeros(14), "images": {"cam_high": np.zeros((8, 8, 3), np.uint8)}, "prompt": "p", **extra}


def test_server_passes_the_extensions_only_when_sent():
    rec = _Recorder()
    srv = PolicyServer(rec, ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with ServeClient("127.0.0.1", port) as c:
            c.infer(_obs())
            c.infer(_obs(step=7, noise_seed=3))
            c.infer(_obs(step=8, action_prefix=np.ones((5, 14)), inference_delay=2))
            for bad in (_obs(step=-2), _obs(action_prefix=np.ones((60, 14))), _obs(inference_delay=4),
                        _obs(action_prefix=np.full((3, 14), np.inf)), _obs(step="1")):
                reply = c.send_raw(packb(bad))
                assert set(reply) == {"error"} and reply["error"]
            assert c.infer(_obs(step=9))["actions"].shape == (50, 14)  # still serving
    finally:
        srv.stop()
    assert rec.calls[0] == {"seed": None, "prefix": None, "delay": 0, "step": None}
    assert rec.calls[1]["step"] == 7 and rec.calls[1]["seed"] == 3 and rec.calls[1]["prefix"] is None
    assert rec.calls[2]["step"] == 8 and rec.calls[2]["delay"] == 2 and rec.calls[2]["prefix"].shape == (5, 14)
    assert len(rec.calls) == 4 and rec.calls[3]["step"] == 9

    old = _Recorder(old=True)  # a runtime without the extensions: step dropped, a prefix refused clearly
    srv = PolicyServer(old, ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with ServeClient("127.0.0.1", port) as c:
            assert c.infer(_obs(step=4))["actions"].shape == (50, 14)
            with pytest.raises(ServeError, match="does not support action_prefix"):
                c.infer(_obs(step=4, action_prefix=np.ones((2, 14)), inference_delay=1))
    finally:
        srv.stop()
    assert old.calls == [{"seed": None}]


def test_replay_served_in_thread_over_the_wire(replay):
    srv = PolicyServer(replay, ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with ServeClient("127.0.0.1", port) as c:
            assert c.metadata["replay"] is True
            state, want = replay.recorded(42)
            got = c.infer(_obs(state=state, step=42))["actions"]
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
            with pytest.raises(ServeError, match="step"):
                c.infer(_obs(state=state))
    finally:
        srv.stop()
