"""What can be served (serving.policies.load_served_policy): a replay folder becomes a ReplayPolicy and a trained
folder a PolicyRuntime, both checked against a rig; a replay policy served in a thread answers by step over the
wire."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.replay_policy import REPLAY_FILE, ReplayPolicy, make_replay_policy
from finetune.runtime import PolicyRuntime, RigMismatchError
from serve_helpers import tiny_policy
from serving.chunks import ChunkRequest
from serving.client import PolicyConnectionError, RemotePolicy
from serving.policies import load_served_policy
from serving.server import PolicyServer, ServeConfig
from train_helpers import sim_dataset
from workbench.config import load_rig_config, parse_rig_config, preset_text


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    episode = sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[0]
    return make_replay_policy(episode, tmp_path_factory.mktemp("replay") / "policy", horizon=50)


@pytest.fixture(scope="module")
def replay(folder) -> ReplayPolicy:
    return load_served_policy(folder, device="cpu")


def _request(state: np.ndarray, step: int | None = None) -> ChunkRequest:
    return ChunkRequest(state, {"cam_high": np.zeros((8, 8, 3), np.uint8)}, "p", step=step)


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


def test_a_trained_folder_is_served_as_a_policy_runtime():
    runtime = load_served_policy(tiny_policy(), device="cpu", rig=load_rig_config("sim-transfer-cube"))
    assert isinstance(runtime, PolicyRuntime) and runtime.action_shape == (50, 14)


def test_replay_served_in_thread_over_the_wire(replay):
    srv = PolicyServer(replay, ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with RemotePolicy(f"ws://127.0.0.1:{port}") as c:
            assert c.metadata["replay"] is True
            state, want = replay.recorded(42)
            got = c.infer(_request(state, step=42)).actions
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
            with pytest.raises(PolicyConnectionError, match="step") as info:
                c.infer(_request(state))
            assert info.value.kind == "server_error"
    finally:
        srv.stop()
