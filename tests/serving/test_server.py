"""`workbench serve` (serving.server): openpi's websocket protocol. openpi's own client gets [50, 14] actions,
RemotePolicy gets the same actions as the runtime for the same seed, api keys guard non-loopback binds, malformed
messages get error replies and never take the server down, the extensions reach the runtime only when sent. Clients
connect only to 127.0.0.1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import msgpack
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from finetune.runtime import PolicyRuntime
from serve_helpers import tiny_policy
from serving.chunks import ChunkRequest
from serving.client import PolicyConnectionError, RemotePolicy
from serving.protocol import packb
from serving.server import PolicyServer, ServeConfig
from train_helpers import ROOT, env
from wire_helpers import close, openpi_client, send_raw

MAX_BYTES = 2 << 20


@pytest.fixture(scope="module")
def runtime() -> PolicyRuntime:
    return PolicyRuntime.load(tiny_policy(), device="cpu")


@pytest.fixture(scope="module")
def server(runtime):
    srv = PolicyServer(runtime, ServeConfig(host="127.0.0.1", port=0, max_message_bytes=MAX_BYTES))
    srv.start_in_thread()
    yield srv
    srv.stop()


def _obs(runtime: PolicyRuntime, chw: bool = True, seed: int | None = 7) -> dict:
    rng = np.random.default_rng(0)
    shape = (3, 224, 224) if chw else (224, 224, 3)
    obs = {"state": rng.normal(0, 0.3, 14).astype(np.float32),
           "images": {c: rng.integers(0, 256, shape, dtype=np.uint8) for c in runtime.cameras},
           "prompt": "transfer the cube"}
    if seed is not None:
        obs["noise_seed"] = seed
    return obs


def _request(obs: dict, step: int | None = None) -> ChunkRequest:
    return ChunkRequest(obs["state"], obs["images"], obs["prompt"], step=step, seed=obs.get("noise_seed"))


def test_openpi_client_gets_actions_and_health_check(server, runtime):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200
    client = openpi_client(server.port)
    assert client.get_server_metadata()["action_horizon"] == 50
    out = client.infer(_obs(runtime))
    assert out["actions"].shape == (50, 14) and np.isfinite(out["actions"]).all()
    assert {"infer_ms", "decode_ms", "encode_ms"} <= set(out["server_timing"])
    out2 = client.infer(_obs(runtime, seed=None))  # openpi's clients send no seed
    assert out2["actions"].shape == (50, 14)


def test_remote_policy_matches_the_runtime_for_the_same_seed(server, runtime):
    obs = _obs(runtime)
    with RemotePolicy(f"ws://127.0.0.1:{server.port}") as client:
        a = client.infer(_request(obs)).actions
        b = client.infer(_request(_obs(runtime, chw=False))).actions  # HxWx3 frames: the same pixels, transposed
    assert a.shape == (50, 14)
    images = {k: v.transpose(1, 2, 0) for k, v in obs["images"].items()}
    ref = runtime.infer(obs["state"], images, obs["prompt"], seed=7)
    np.testing.assert_array_equal(a, ref)
    assert b.shape == (50, 14)


def test_api_key_is_required_off_loopback_and_checked(runtime):
    with pytest.raises(ValueError, match="api key"):
        PolicyServer(runtime, ServeConfig(host="0.0.0.0", port=0))
    srv = PolicyServer(runtime, ServeConfig(host="0.0.0.0", port=0, api_key="s3cret-key"))
    port = srv.start_in_thread()
    try:
        for key in (None, "wrong-key"):
            with pytest.raises(InvalidStatus) as info:
                openpi_client(port, api_key=key)
            assert info.value.response.status_code == 401
            assert b"api key" in info.value.response.body
            with pytest.raises(PolicyConnectionError, match="api key") as info:
                RemotePolicy(f"ws://127.0.0.1:{port}", api_key=key, timeout=10)
            assert info.value.kind == "auth"
        with RemotePolicy(f"ws://127.0.0.1:{port}", api_key="s3cret-key") as client:
            assert client.infer(_request(_obs(runtime))).actions.shape == (50, 14)
        assert openpi_client(port, api_key="s3cret-key").infer(_obs(runtime))["actions"].shape == (50, 14)
    finally:
        srv.stop()


def _nd(a: np.ndarray, **override) -> dict:
    d = {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": list(a.shape)}
    d.update({k.encode(): v for k, v in override.items()})
    return d


def _malformed(runtime: PolicyRuntime) -> list[bytes | str]:
    rng = np.random.default_rng(1)
    good = _obs(runtime)
    img = good["images"]["cam_high"]
    bad: list[bytes | str] = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8)) for n in rng.integers(1, 300, 12)]
    bad += [b"", "text, not binary", msgpack.packb([1, 2, 3]), msgpack.packb(42), msgpack.packb("obs"),
            b"\xc1", b"\x81\xa5state", msgpack.packb({"state": 1}) + b"trailing", b"\xdd\xff\xff\xff\xff"]
    for key in ("state", "images", "prompt"):
        bad.append(packb({k: v for k, v in good.items() if k != key}))
    variants = [
        {"state": np.zeros(7, np.float32)}, {"state": np.zeros((2, 14), np.float32)}, {"state": "zeros"},
        {"state": np.full(14, np.nan, np.float32)}, {"state": [1, "a"] * 7}, {"prompt": 5}, {"prompt": None},
        {"images": []}, {"images": {}}, {"images": {"cam_high": "pixels"}},
        {"images": {**good["images"], "cam_high": img.astype(np.float32)}},
        {"images": {**good["images"], "cam_high": img[0]}},
        {"images": {**good["images"], "cam_high": img[:2]}},
        {"images": {k: v for k, v in list(good["images"].items())[1:]}},  # a policy camera missing
        {"images": {**good["images"], 5: img}}, {"noise_seed": -1}, {"noise_seed": "7"}, {"noise_seed": 1.5},
        {"state": _nd(np.zeros(14, np.float32), shape=[15])}, {"state": _nd(np.zeros(14, np.float32), dtype="|O")},
        {"state": _nd(np.zeros(14, np.float32), dtype="nonsense")}, {"state": _nd(np.zeros(14), shape="14")},
        {"state": _nd(np.zeros(14), shape=[-14])}, {"state": _nd(np.zeros(14), data="text")},
        {"state": np.zeros(14, np.complex64).real.astype(np.float32).view(np.uint8)},
    ]
    bad += [packb({**good, **v}) for v in variants]
    bad.append(packb({**good, "prompt": "x" * (MAX_BYTES + 10)}))  # oversized
    bad.append(bytes(MAX_BYTES + 1))
    return bad


def test_fuzz_malformed_messages_get_errors_and_the_server_keeps_serving(server, runtime):
    msgs = _malformed(runtime)
    assert len(msgs) >= 50
    client = openpi_client(server.port)
    for i, m in enumerate(msgs):
        reply = send_raw(client, m)
        assert set(reply) == {"error"} and isinstance(reply["error"], str) and reply["error"], (i, reply)
    with RemotePolicy(f"ws://127.0.0.1:{server.port}") as policy:
        with pytest.raises(PolicyConnectionError, match="missing camera") as info:
            policy.infer(_request({**_obs(runtime), "images": {"cam_high": _obs(runtime)["images"]["cam_high"]}}))
        assert info.value.kind == "server_error"
    assert client.infer(_obs(runtime))["actions"].shape == (50, 14)
    close(client)
    # a client that leaves mid-request does not disturb the next one
    c = openpi_client(server.port)
    c._ws.send(packb(_obs(runtime)))
    close(c)
    with RemotePolicy(f"ws://127.0.0.1:{server.port}") as policy:
        assert policy.infer(_request(_obs(runtime))).actions.shape == (50, 14)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_and_refuses_a_public_bind_without_key(runtime):
    cmd = [sys.executable, "-m", "workbench.cli", "serve", str(tiny_policy()), "--device", "cpu"]
    r = subprocess.run(cmd + ["--host", "0.0.0.0"], env=env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "api key" in (r.stdout + r.stderr)
    port = _free_port()
    proc = subprocess.Popen(cmd + ["--port", str(port), "--rig", "sim-transfer-cube"], env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        with RemotePolicy(f"ws://127.0.0.1:{port}") as client:
            assert client.metadata["rig"] == "sim-transfer-cube"
            a = client.infer(_request(_obs(runtime))).actions
        obs = _obs(runtime)
        ref = runtime.infer(obs["state"], {k: v.transpose(1, 2, 0) for k, v in obs["images"].items()},
                            obs["prompt"], seed=7)
        np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
    finally:
        proc.terminate()
        proc.wait(10)


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


def _small(**extra) -> dict:
    return {"state": np.zeros(14), "images": {"cam_high": np.zeros((8, 8, 3), np.uint8)}, "prompt": "p", **extra}


def _small_request(step: int | None = None, **fields) -> ChunkRequest:
    return ChunkRequest(np.zeros(14), {"cam_high": np.zeros((8, 8, 3), np.uint8)}, "p", step=step, **fields)


def test_server_passes_the_extensions_only_when_sent():
    rec = _Recorder()
    srv = PolicyServer(rec, ServeConfig(port=0))
    port = srv.start_in_thread()
    try:
        with RemotePolicy(f"ws://127.0.0.1:{port}") as c:
            c.infer(_small_request())
            c.infer(_small_request(step=7, seed=3))
            c.infer(_small_request(step=8, prefix=np.ones((5, 14)), delay=2))
            raw = openpi_client(port)
            for bad in (_small(step=-2), _small(action_prefix=np.ones((60, 14))), _small(inference_delay=4),
                        _small(action_prefix=np.full((3, 14), np.inf)), _small(step="1")):
                reply = send_raw(raw, packb(bad))
                assert set(reply) == {"error"} and reply["error"]
            close(raw)
            assert c.infer(_small_request(step=9)).actions.shape == (50, 14)  # still serving
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
        with RemotePolicy(f"ws://127.0.0.1:{port}") as c:
            assert c.infer(_small_request(step=4)).actions.shape == (50, 14)
            with pytest.raises(PolicyConnectionError, match="does not support action_prefix"):
                c.infer(_small_request(step=4, prefix=np.ones((2, 14)), delay=1))
    finally:
        srv.stop()
    assert old.calls == [{"seed": None}]
