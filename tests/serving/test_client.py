"""The robot side's client (serving.client.RemotePolicy) against an in-thread PolicyServer: round trips, warm-up,
and failures -- nothing listening, a URL that is not ws://, a missing or wrong api key, a wrong reply shape -- as
PolicyConnectionError naming the URL and the fix."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from finetune.replay_policy import ReplayPolicy, make_replay_policy
from serving.chunks import ChunkRequest
from serving.client import PolicyConnectionError, RemotePolicy
from serving.server import PolicyServer, ServeConfig
from train_helpers import sim_dataset

CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> ReplayPolicy:
    ep = sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[1]
    return ReplayPolicy.load(make_replay_policy(ep, tmp_path_factory.mktemp("replay") / "policy"))


def _images(seed: int = 0, hw=(48, 64)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in CAMS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _WrongShape:
    action_shape = (50, 14)

    def metadata(self) -> dict:
        return {"policy": "wrong", "action_horizon": 50, "action_dim": 14, "cameras": list(CAMS)}

    def infer(self, state, images, prompt, noise=None, *, seed=None, step=None, prefix=None, delay=0):
        return np.zeros((50, 7), np.float32)


def test_remote_policy_errors_name_the_url_and_the_fix(replay):
    port = _free_port()
    with pytest.raises(PolicyConnectionError, match=f"ws://127.0.0.1:{port}.*connection refused") as info:
        RemotePolicy(f"ws://127.0.0.1:{port}", timeout=5)
    assert info.value.kind == "refused"
    with pytest.raises(PolicyConnectionError, match="ws://"):
        RemotePolicy("http://127.0.0.1:1")

    srv = PolicyServer(replay, ServeConfig(host="0.0.0.0", port=0, api_key="s3cret"))
    port = srv.start_in_thread()
    try:
        for key in (None, "wrong"):
            with pytest.raises(PolicyConnectionError, match="api key") as info:
                RemotePolicy(f"ws://127.0.0.1:{port}", api_key=key, timeout=5)
            assert info.value.kind == "auth" and f"127.0.0.1:{port}" in str(info.value)
        with RemotePolicy(f"ws://127.0.0.1:{port}", api_key="s3cret") as policy:
            state, want = replay.recorded(3)
            np.testing.assert_allclose(policy.infer(ChunkRequest(state, _images(), "", step=3)).actions, want,
                                       atol=1e-5)
            assert policy.warmup().actions.shape == (50, 14)
    finally:
        srv.stop()

    srv = PolicyServer(_WrongShape(), ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with RemotePolicy(f"ws://127.0.0.1:{port}") as policy:
            with pytest.raises(PolicyConnectionError, match=r"shape \[50, 7\]") as info:
                policy.infer(ChunkRequest(np.zeros(14), _images(), "", step=0))
            assert info.value.kind == "bad_reply"
    finally:
        srv.stop()
