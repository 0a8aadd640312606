"""The wire (issue 19.10), on real servers on loopback: a request carries only the policy's cameras, resized on the
robot side to the size the server announces (and the chunk is the one full frames give; an unmodified openpi
client's full frames still work); `wss://` with a real certificate made here (verified against the lab CA, refused
against another); a plaintext connection to another machine is said to be unencrypted; repeated wrong api keys from
one address are refused for a cool-down."""
from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from finetune.replay_policy import ReplayPolicy, make_replay_policy
from finetune.runtime import PolicyRuntime
from serve_helpers import tiny_policy
from drivers.cameras.resize import resize_with_pad
from serving.chunks import ChunkRequest
from serving.client import TLS_CA_ENV, PolicyConnectionError, RemotePolicy
from serving.server import PolicyServer, ServeConfig
from tls_helpers import LabCerts, lan_address, make_lab_certs
from train_helpers import ROOT, env, sim_dataset
from wire_helpers import close, openpi_client

POLICY_CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
RIG_CAMS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")  # aloha.toml's four; cam_low has no slot


def _frames(seed: int = 0, hw=(480, 640), cams=RIG_CAMS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in cams}


class _Pi0Like:
    """To the server, a trained PolicyRuntime at pi0's input size: transforms reading 3 of the rig's 4 cameras at
    224x224, a runtime insisting on all 4 (as PolicyRuntime.infer does). Its actions are a function of the frames
    as the model would see them (resized to 224 with padding) and of the state."""

    action_shape = (50, 14)
    cameras = RIG_CAMS

    def __init__(self) -> None:
        self.policy = SimpleNamespace(transforms=SimpleNamespace(
            config=SimpleNamespace(rig_cameras=POLICY_CAMS, image_size=224)))
        self.seen: list[dict[str, tuple[int, ...]]] = []

    def metadata(self) -> dict:
        return {"policy": "pi0-like", "action_horizon": 50, "action_dim": 14, "cameras": list(RIG_CAMS)}

    def infer(self, state, images, prompt, noise=None, *, seed=None, step=None, prefix=None, delay=0):
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f"missing camera images {missing}")
        self.seen.append({k: tuple(v.shape) for k, v in images.items()})
        seen = np.concatenate([resize_with_pad(images[c], 224).reshape(-1, 3).mean(0) for c in POLICY_CAMS])
        out = np.zeros((50, 14), np.float32)
        out[:, :9] = seen
        out[:, 9:] = np.asarray(state)[9:]
        return out


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> ReplayPolicy:
    ep = sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[1]
    return ReplayPolicy.load(make_replay_policy(ep, tmp_path_factory.mktemp("replay") / "policy"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> LabCerts:
    return make_lab_certs(tmp_path_factory.mktemp("certs"))


def _serve(runtime, **config) -> PolicyServer:
    srv = PolicyServer(runtime, ServeConfig(**{"host": "127.0.0.1", "port": 0, **config}))
    srv.start_in_thread()
    return srv


# ------------------------------------------------------------------------------------------------ frames
def test_requests_carry_only_the_policy_cameras_resized_to_its_input(capsys):
    runtime = _Pi0Like()
    srv = _serve(runtime)
    try:
        state = np.linspace(-1, 1, 14)
        frames = _frames()
        client = openpi_client(srv.port)  # unmodified: every camera, full size
        meta = client.get_server_metadata()
        assert meta["image_cameras"] == list(POLICY_CAMS) and meta["image_size"] == 224
        full = client.infer({"state": state, "images": frames, "prompt": "p"})["actions"]
        before = srv.last_request_bytes
        close(client)
        with RemotePolicy(f"ws://127.0.0.1:{srv.port}") as policy:
            assert policy.metadata["image_size"] == 224
            reply = policy.infer(ChunkRequest(state, frames, "p", step=0))
            after = srv.last_request_bytes
            assert policy.last_request_bytes == after
        with capsys.disabled():
            print(f"\n[wire] bytes per request, 4 cameras at 640x480: {before} (full frames) -> {after} "
                  f"(the policy's 3 cameras at 224x224)")
        assert before > 4 * 640 * 480 * 3 and after < 0.47e6 and after >= 3 * 224 * 224 * 3
        assert runtime.seen[0] == {c: (480, 640, 3) for c in RIG_CAMS}  # the openpi client's frames, as sent
        assert runtime.seen[1] == {"cam_high": (224, 224, 3), "cam_left_wrist": (224, 224, 3),
                                   "cam_right_wrist": (224, 224, 3), "cam_low": (1, 1, 3)}  # unread: placeholder
        np.testing.assert_array_equal(reply.actions, full)  # what the model saw did not change
    finally:
        srv.stop()


def test_a_trained_policy_gives_the_same_chunk_from_resized_frames():
    runtime = PolicyRuntime.load(tiny_policy(), device="cpu")
    srv = _serve(runtime)
    try:
        state = np.random.default_rng(1).normal(0, 0.3, 14)
        frames = _frames(5)
        client = openpi_client(srv.port)
        meta = client.get_server_metadata()
        size = runtime.policy.transforms.config.image_size
        assert meta["image_cameras"] == list(runtime.policy.transforms.config.rig_cameras) and meta["image_size"] == size
        full = client.infer({"state": state, "images": frames, "prompt": "transfer the cube", "noise_seed": 7})
        before = srv.last_request_bytes
        close(client)
        with RemotePolicy(f"ws://127.0.0.1:{srv.port}") as policy:
            reply = policy.infer(ChunkRequest(state, frames, "transfer the cube", step=0, seed=7))
            assert srv.last_request_bytes < 3 * size * size * 3 + 4096 < before
            assert policy.warmup().actions.shape == (50, 14)  # black frames at the announced size
        assert reply.actions.shape == (50, 14) and np.isfinite(reply.actions).all()
        np.testing.assert_array_equal(reply.actions, full["actions"])
    finally:
        srv.stop()


def test_a_replay_policy_gets_no_images(replay):
    srv = _serve(replay)
    try:
        with RemotePolicy(f"ws://127.0.0.1:{srv.port}") as policy:
            assert policy.metadata["image_cameras"] == [] and policy.metadata["image_size"] is None
            state, want = replay.recorded(30)
            reply = policy.infer(ChunkRequest(state, _frames(cams=POLICY_CAMS), "", step=30))
            assert srv.last_request_bytes < 2048
            np.testing.assert_allclose(reply.actions, want, atol=1e-5)
        client = openpi_client(srv.port)  # an openpi client's frames are still accepted
        out = client.infer({"state": state, "images": _frames(cams=POLICY_CAMS), "prompt": "", "step": 30})
        np.testing.assert_allclose(out["actions"], want, atol=1e-5)
        close(client)
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------------- TLS
def test_wss_round_trip_verified_against_the_lab_ca(replay, certs, monkeypatch):
    monkeypatch.delenv(TLS_CA_ENV, raising=False)
    srv = _serve(replay, api_key="s3cret", tls_cert=certs.cert, tls_key=certs.key)
    url = f"wss://127.0.0.1:{srv.port}"
    state, want = replay.recorded(12)
    try:
        for u in (url, f"wss://localhost:{srv.port}"):
            with RemotePolicy(u, api_key="s3cret", tls_ca=certs.ca) as policy:
                assert policy.encrypted and policy.security_warning is None
                np.testing.assert_allclose(policy.infer(ChunkRequest(state, {}, "", step=12)).actions, want,
                                           atol=1e-5)
        for ca, where in ((certs.other_ca, str(certs.other_ca)), (None, "trust store")):  # another CA, the system's
            with pytest.raises(PolicyConnectionError, match="certificate") as info:
                RemotePolicy(url, api_key="s3cret", tls_ca=ca, timeout=10)
            assert info.value.kind == "tls" and url in str(info.value) and where in str(info.value)
            assert TLS_CA_ENV in str(info.value)
        monkeypatch.setenv(TLS_CA_ENV, str(certs.ca))  # the CA from the environment
        with RemotePolicy(url, api_key="s3cret") as policy:
            np.testing.assert_allclose(policy.infer(ChunkRequest(state, {}, "", step=12)).actions, want, atol=1e-5)
        with pytest.raises(PolicyConnectionError, match="wss://") as info:  # plaintext to a TLS server
            RemotePolicy(f"ws://127.0.0.1:{srv.port}", api_key="s3cret", timeout=10)
        assert info.value.kind in ("handshake", "closed")
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))  # openpi's unmodified client, trusting the lab CA
        client = openpi_client(None, api_key="s3cret", host=url)
        np.testing.assert_allclose(client.infer({"state": state, "images": {}, "prompt": "", "step": 12})["actions"],
                                   want, atol=1e-5)
        close(client)
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{srv.port}/healthz", timeout=10, context=ctx) as r:
            assert r.status == 200
    finally:
        srv.stop()
    plain = _serve(replay)
    try:
        with pytest.raises(PolicyConnectionError, match="TLS") as info:  # TLS to a plaintext server
            RemotePolicy(f"wss://127.0.0.1:{plain.port}", tls_ca=certs.ca, timeout=10)
        assert info.value.kind == "tls"
        with pytest.raises(PolicyConnectionError, match="wss://"):  # a CA file for a plaintext URL: a mistake
            RemotePolicy(f"ws://127.0.0.1:{plain.port}", tls_ca=certs.ca)
    finally:
        plain.stop()
    with pytest.raises(ValueError, match="both"):
        ServeConfig(tls_cert=certs.cert).check()
    with pytest.raises(ValueError, match="cannot load"):
        ServeConfig(tls_cert=certs.cert, tls_key=certs.ca).check()


def test_a_plaintext_connection_to_another_machine_is_said_to_be_unencrypted(replay, caplog):
    srv = _serve(replay, host="0.0.0.0", api_key="s3cret")
    try:
        with caplog.at_level(logging.WARNING, logger="serving.client"):
            with RemotePolicy(f"ws://127.0.0.1:{srv.port}", api_key="s3cret") as policy:
                assert not policy.encrypted and policy.loopback and policy.security_warning is None
            assert not [r for r in caplog.records if "not encrypted" in r.getMessage()]
            addr = lan_address()
            if addr is None:
                pytest.skip("this machine has no network address but loopback")
            with RemotePolicy(f"ws://{addr}:{srv.port}", api_key="s3cret") as policy:
                assert not policy.encrypted and not policy.loopback
                assert "not encrypted" in policy.security_warning and "--tls-cert" in policy.security_warning
                state, want = replay.recorded(3)
                np.testing.assert_allclose(policy.infer(ChunkRequest(state, {}, "", step=3)).actions, want, atol=1e-5)
        warned = [r for r in caplog.records if "not encrypted" in r.getMessage()]
        assert len(warned) == 1 and addr in warned[0].getMessage()
    finally:
        srv.stop()


def test_cli_serves_wss_with_tls_cert_and_key(replay, certs, tmp_path):
    cmd = [sys.executable, "-m", "workbench.cli", "serve", str(replay.folder), "--device", "cpu"]
    r = subprocess.run(cmd + ["--tls-cert", str(certs.cert)], env=env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--tls-key" in r.stderr
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(cmd + ["--port", "0", "--ready-file", str(ready), "--tls-cert", str(certs.cert),
                                   "--tls-key", str(certs.key)], env=env(), cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.is_file():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert info["url"].startswith("wss://")
        with RemotePolicy(f"wss://127.0.0.1:{info['port']}", tls_ca=certs.ca) as policy:
            state, want = replay.recorded(7)
            np.testing.assert_allclose(policy.infer(ChunkRequest(state, {}, "", step=7)).actions, want, atol=1e-5)
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------------------------- wrong keys
def test_repeated_wrong_keys_are_refused_for_a_cool_down(replay, caplog):
    cooldown = 2.0
    srv = _serve(replay, api_key="right-key", auth_max_failures=3, auth_window_s=30, auth_cooldown_s=cooldown)
    url = f"ws://127.0.0.1:{srv.port}"

    def attempt(key: str | None) -> str:
        try:
            RemotePolicy(url, api_key=key, timeout=10).close()
        except PolicyConnectionError as e:
            return e.kind
        return "ok"

    try:
        with caplog.at_level(logging.WARNING, logger="serving.server"):
            assert [attempt(None) for _ in range(5)] == ["auth"] * 5  # a missing key is no guess: not counted
            assert [attempt("guess") for _ in range(2)] + [attempt("right-key")] == ["auth", "auth", "ok"]
            assert [attempt("guess") for _ in range(2)] == ["auth", "auth"]  # the right key started afresh
            assert attempt("guess") == "auth"  # the third within the window: the address is refused from now on
            t_block = time.monotonic()
            with pytest.raises(PolicyConnectionError, match="too many wrong api keys") as info:
                RemotePolicy(url, api_key="right-key", timeout=10)
            assert info.value.kind == "rate_limited"
            with pytest.raises(InvalidStatus) as raw:  # openpi's client: HTTP 429
                openpi_client(srv.port, api_key="right-key")
            assert raw.value.response.status_code == 429
            assert [attempt("guess"), attempt("right-key")] == ["rate_limited"] * 2
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10) as r:
                assert r.status == 200  # the health check is not guarded
            time.sleep(max(0.0, t_block + cooldown + 0.2 - time.monotonic()))
            assert attempt("right-key") == "ok"
            assert attempt("guess") == "auth"  # and counting starts afresh
        blocked = [r for r in caplog.records if "refusing it for" in r.getMessage()]
        assert len(blocked) == 1 and "127.0.0.1" in blocked[0].getMessage()
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="auth_max_failures"):
        ServeConfig(auth_max_failures=0).check()
