"""The serving path the trial runner uses (workbench.deploy.policy_launcher): `workbench serve` as a real child
process on loopback (a tiny trained pi0 and a replay policy), RemotePolicy round trips with step / prefix / delay,
openpi's unmodified client against the same server, and failures -- a killed child, a folder that cannot load, a
rig mismatch, malformed fields -- as PolicyConnectionError without hangs; a `wss://` server opened with the lab's
CA, and a plaintext one on another machine said to be unencrypted. The client alone: tests/serving."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from finetune.replay_policy import ReplayPolicy, make_replay_policy  # noqa: E402
from finetune.runtime import PolicyRuntime  # noqa: E402
from serve_helpers import tiny_policy  # noqa: E402
from serving.chunks import ChunkRequest  # noqa: E402
from serving.client import PolicyConnectionError  # noqa: E402
from serving.protocol import packb, unpackb  # noqa: E402
from train_helpers import sim_dataset  # noqa: E402
from workbench.config import parse_rig_config, preset_text  # noqa: E402
from workbench.deploy.chunk_policy import ChunkPolicy  # noqa: E402
from workbench.deploy.policy_launcher import LocalPolicyServer, open_policy  # noqa: E402
from serving.server import PolicyServer, ServeConfig  # noqa: E402
from tls_helpers import lan_address, make_lab_certs  # noqa: E402

CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module")
def replay_folder(tmp_path_factory) -> Path:
    ep = sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[1]
    return make_replay_policy(ep, tmp_path_factory.mktemp("replay") / "policy")


@pytest.fixture(scope="module")
def replay(replay_folder) -> ReplayPolicy:
    return ReplayPolicy.load(replay_folder)


def _images(seed: int = 0, hw=(48, 64)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in CAMS}


def _send_raw(client, data: bytes) -> dict:
    """One message as is over openpi's client connection; -> the decoded reply (error replies included)."""
    client._ws.send(data)
    return unpackb(client._ws.recv(timeout=30))


def test_child_server_serves_a_trained_policy_to_remote_policy_and_openpi_client():
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    lines: list[str] = []
    with LocalPolicyServer(tiny_policy(), rig="sim-transfer-cube", device="cpu", log=lines.append) as srv:
        assert srv.alive and srv.port and srv.url == f"ws://127.0.0.1:{srv.port}"
        policy = srv.connect()
        assert isinstance(policy, ChunkPolicy)
        assert policy.metadata["rig"] == "sim-transfer-cube" and policy.metadata["action_horizon"] == 50
        state = np.random.default_rng(1).normal(0, 0.3, 14)
        images = _images()
        reply = policy.infer(ChunkRequest(state, images, "transfer the cube", step=3, seed=7))
        assert reply.actions.shape == (50, 14) and np.isfinite(reply.actions).all()
        assert 0 < reply.infer_ms <= reply.roundtrip_ms and reply.timing["roundtrip_ms"] == reply.roundtrip_ms
        ref = PolicyRuntime.load(tiny_policy(), device="cpu").infer(state, images, "transfer the cube", seed=7)
        np.testing.assert_allclose(reply.actions, ref, rtol=1e-5, atol=1e-5)
        # openpi's own client, none of the new fields: works as before
        client = WebsocketClientPolicy(host="127.0.0.1", port=srv.port)
        out = client.infer({"state": state.astype(np.float32), "prompt": "transfer the cube", "noise_seed": 7,
                            "images": {k: v.transpose(2, 0, 1) for k, v in images.items()}})
        np.testing.assert_allclose(out["actions"], ref, rtol=1e-5, atol=1e-5)
        policy.close()
        assert srv.alive  # closing a client of a server we hold does not stop it
    assert not srv.alive and srv.stop() is not None  # stop is idempotent
    assert any("serving" in line for line in lines)  # the child's log reached us


def test_open_policy_replay_round_trip_with_step_prefix_delay(replay_folder, replay):
    lines: list[str] = []
    policy = open_policy(str(replay_folder), rig="sim-transfer-cube", device="cpu", log=lines.append)
    try:
        assert policy.metadata["replay"] is True and policy.metadata["task"] == "transfer the cube"
        for step in (0, 25, 60, 99, 140):
            state, want = replay.recorded(step)
            prefix = want[:6]
            reply = policy.infer(ChunkRequest(state, _images(step), "transfer the cube", step=step,
                                              prefix=prefix, delay=3, seed=step))
            np.testing.assert_allclose(reply.actions, want, atol=1e-5, rtol=0, err_msg=f"step {step}")
        server = policy.server
        assert server.alive
    finally:
        policy.close()
    assert not server.alive  # open_policy's close() also stops the child
    policy.close()


def test_killed_child_is_a_connection_error_and_reported(replay_folder, replay):
    lines: list[str] = []
    srv = LocalPolicyServer(str(replay_folder), device="cpu", log=lines.append).start()
    try:
        policy = srv.connect(timeout=20)
        state, _ = replay.recorded(5)
        req = ChunkRequest(state, _images(), "x", step=5)
        assert policy.infer(req).actions.shape == (50, 14)
        os.kill(srv.proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(PolicyConnectionError) as info:
            policy.infer(req)
        assert time.monotonic() - t0 < 5
        assert srv.url in str(info.value) and "SIGKILL" in str(info.value)
        with pytest.raises(PolicyConnectionError, match="refused|closed"):  # and stays an error, fast
            policy.infer(req)
        assert time.monotonic() - t0 < 8
        assert not srv.alive and srv.returncode == -signal.SIGKILL
        assert "SIGKILL" in (srv.death_report() or "")
        with pytest.raises(PolicyConnectionError, match="has exited"):
            srv.check()
        assert any("exited with code" in line for line in lines)
        policy.close()
    finally:
        srv.stop()
        srv.stop()


def test_a_folder_that_fails_to_load_names_the_folder_and_the_message(tmp_path):
    empty = tmp_path / "no_policy_here"
    empty.mkdir()
    t0 = time.monotonic()
    with pytest.raises(PolicyConnectionError) as info:
        open_policy(str(empty), device="cpu", log=None)
    assert time.monotonic() - t0 < 60
    msg = str(info.value)
    assert info.value.kind == "server_exited" and str(empty) in msg and "not a policy folder" in msg
    assert "exit code 2" in msg


def test_rig_is_passed_through_and_a_mismatch_refused(replay_folder):
    other = parse_rig_config(preset_text("sim-transfer-cube").replace("[cameras.cam_right_wrist]",
                                                                      "[cameras.cam_low]"), "<test>")
    with pytest.raises(PolicyConnectionError, match="cam_right_wrist") as info:
        LocalPolicyServer(str(replay_folder), rig=other, device="cpu").start()
    assert "recorded on rig" in str(info.value)


def test_malformed_extension_fields_get_error_replies_and_the_child_keeps_serving(replay_folder, replay):
    with LocalPolicyServer(str(replay_folder), device="cpu") as srv:
        state, want = replay.recorded(10)
        good = {"state": state, "images": _images(), "prompt": "x", "step": 10}
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        c = WebsocketClientPolicy(host="127.0.0.1", port=srv.port)
        for bad in ({"step": -1}, {"step": "ten"}, {"step": None}, {"action_prefix": np.zeros((3, 5))},
                    {"action_prefix": np.zeros((51, 14))}, {"action_prefix": np.full((2, 14), np.nan)},
                    {"action_prefix": np.zeros((2, 14)), "inference_delay": 5}, {"inference_delay": 1},
                    {"inference_delay": -3}, {"action_prefix": "prefix"}):
            msg = {**good, **bad}
            if bad.get("step", 0) is None:
                msg.pop("step")  # no step: a replay policy cannot look its chunk up
            reply = _send_raw(c, packb(msg))
            assert set(reply) == {"error"} and reply["error"], bad
        np.testing.assert_allclose(c.infer(good)["actions"], want, atol=1e-5)
        c._ws.close()
        policy = srv.connect()
        with pytest.raises(PolicyConnectionError, match="answered an error.*inference_delay") as info:
            policy.infer(ChunkRequest(state, _images(), "x", step=10, prefix=want[:2], delay=4))
        assert info.value.kind == "server_error"
        assert policy.infer(ChunkRequest(state, _images(), "x", step=10)).actions.shape == (50, 14)
        policy.close()
        srv.proc.stdin.close()  # what the child sees when its parent dies: it exits by itself (--exit-with-parent)
        assert srv.proc.wait(10) == 0


# -- issue 19.9: checks before a policy moves arms ------------------------------------------------------------------

def _aloha_like(**replace) -> object:
    """A real-arms ("dynamixel") rig with the replay's three cameras (the aloha preset less cam_low)."""
    import dataclasses

    text = preset_text("aloha")
    start = text.index("[cameras.cam_low]")
    text = text[:start] + text[text.index("[cameras.cam_left_wrist]"):]
    rig = parse_rig_config(text, "<aloha-3cams>")
    return dataclasses.replace(rig, **replace) if replace else rig


def test_a_remote_server_is_checked_on_rate_backend_gripper_and_cameras(replay_folder):
    import dataclasses
    import re

    from workbench.config import load_rig_config

    sim = load_rig_config("sim-transfer-cube")
    lines: list[str] = []
    with LocalPolicyServer(str(replay_folder), device="cpu", log=lines.append) as srv:  # "remote": we open its URL
        assert any("rig NOT checked here (no --rig)" in line and "clients check it" in line for line in lines)
        meta_keys = {"control_hz", "backend", "gripper", "gripper_set", "joint_names", "cameras"}
        cases = {"control rate: policy trained at 50 Hz, rig runs at 25 Hz": dataclasses.replace(sim, control_hz=25.0),
                 "gripper constant follower_joint_open": dataclasses.replace(sim, gripper=dataclasses.replace(
                     sim.gripper, follower_joint_open=sim.gripper.follower_joint_open + 0.1)),
                 "not in training ['cam_low']": parse_rig_config(
                     preset_text("sim-transfer-cube") + '\n[cameras.cam_low]\nkind = "sim"\nfps = 50\n', "<4cams>"),
                 "--allow-sim-policy": _aloha_like()}
        for want, rig in cases.items():
            with pytest.raises(PolicyConnectionError, match=re.escape(want)) as info:
                open_policy(srv.url, rig=rig, warmup=False)
            assert info.value.kind == "rig" and srv.url in str(info.value)
        out: list[str] = []
        policy = open_policy(srv.url, rig=_aloha_like(), warmup=False, allow_sim_policy=True, log=out.append)
        assert meta_keys <= set(policy.metadata) and policy.metadata["backend"] == "sim"
        assert policy.rig_check.ok and any("allowed by --allow-sim-policy" in n for n in policy.rig_check.notes)
        policy.close()
        out.clear()
        policy = open_policy(srv.url, rig="sim-transfer-cube", warmup=False, log=out.append)
        (report,) = [line for line in out if line.startswith("rig check")]
        for what in ("rig check OK", "cameras", "joint layout (14 joints)", "control rate (50 Hz)",
                     "backend (sim -> sim)", "gripper constants"):
            assert what in report
        policy.close()
        out.clear()
        open_policy(srv.url, warmup=False, log=out.append).close()
        assert any("NOT checked against a rig" in line for line in out)


def test_a_child_server_of_a_sim_policy_on_real_arms_needs_the_override(replay_folder):
    lines: list[str] = []
    with pytest.raises(PolicyConnectionError, match="sim-to-real.*--allow-sim-policy") as info:
        open_policy(str(replay_folder), rig=_aloha_like(), device="cpu", warmup=False, log=lines.append)
    assert info.value.kind == "rig"
    # the child (given --rig) checked it and said why it did not refuse; the robot side refused
    assert any("the robot side refuses it unless --allow-sim-policy" in line for line in lines)
    lines.clear()
    policy = open_policy(str(replay_folder), rig=_aloha_like(), device="cpu", warmup=False, log=lines.append,
                         allow_sim_policy=True)
    try:
        assert policy.rig_check.ok and any("allowed by --allow-sim-policy" in line for line in lines)
    finally:
        policy.close()
    assert not policy.server.alive


def test_relative_policy_and_rig_paths_work_from_any_folder(replay_folder, tmp_path, monkeypatch):
    import shutil

    from workbench.config import load_rig_config

    shutil.copytree(replay_folder, tmp_path / "runs" / "policy")
    (tmp_path / "my.toml").write_text(preset_text("sim-transfer-cube"))
    monkeypatch.chdir(tmp_path)  # not the repository root, where the child server runs
    for rig in ("my.toml", load_rig_config("my.toml")):  # a path, and a RigConfig read from a relative path
        lines: list[str] = []
        policy = open_policy("runs/policy", rig=rig, device="cpu", warmup=False, log=lines.append)
        try:
            assert policy.metadata["policy"] == str(tmp_path / "runs" / "policy")
            assert any(line.startswith("rig check OK") for line in lines)
            assert policy.server.command(tmp_path / "r.json")[-2:] == ["--rig", str(tmp_path / "my.toml")]
        finally:
            policy.close()


def test_open_policy_wss_with_the_lab_ca_and_a_warning_for_plaintext_off_loopback(replay, tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_TLS_CA", raising=False)
    certs = make_lab_certs(tmp_path / "certs")
    srv = PolicyServer(replay, ServeConfig(host="127.0.0.1", port=0, api_key="k", tls_cert=certs.cert,
                                           tls_key=certs.key))
    port = srv.start_in_thread()
    try:
        lines: list[str] = []
        policy = open_policy(f"wss://127.0.0.1:{port}", rig="sim-transfer-cube", api_key="k", tls_ca=certs.ca,
                             log=lines.append)  # the warm-up went over TLS too
        state, want = replay.recorded(4)
        np.testing.assert_allclose(policy.infer(ChunkRequest(state, _images(), "x", step=4)).actions, want, atol=1e-5)
        assert policy.encrypted and not any("not encrypted" in line for line in lines)
        policy.close()
        with pytest.raises(PolicyConnectionError, match="certificate") as info:  # no CA: the system's trust store
            open_policy(f"wss://127.0.0.1:{port}", api_key="k")
        assert info.value.kind == "tls"
    finally:
        srv.stop()
    srv = PolicyServer(replay, ServeConfig(host="0.0.0.0", port=0, api_key="k"))
    port = srv.start_in_thread()
    try:
        lines = []
        open_policy(f"ws://127.0.0.1:{port}", api_key="k", log=lines.append).close()
        assert not [line for line in lines if "not encrypted" in line]  # loopback: never leaves the machine
        addr = lan_address()
        if addr is None:
            pytest.skip("this machine has no network address but loopback")
        policy = open_policy(f"ws://{addr}:{port}", api_key="k", log=lines.append)
        warned = [line for line in lines if "not encrypted" in line]
        assert not policy.encrypted and len(warned) == 1 and addr in warned[0]
        policy.close()
    finally:
        srv.stop()


def test_workbench_trials_flags_reach_the_policy_check(replay_folder):
    """`workbench trials --allow-sim-policy` (the flag the refusal names) reaches open_policy through the trials
    service; without it a sim-trained policy is refused on real arms before any trial. Checked to fail with the
    flag not passed on in TrialsService.open."""
    import argparse

    from workbench.cli_trials import register, request_from_args
    from workbench.deploy.trials_service import TrialsService

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def service(*extra: str) -> TrialsService:
        args = parser.parse_args(["trials", "--policy", str(replay_folder), "--device", "cpu", *extra])
        return TrialsService(request_from_args(args), _aloha_like())

    with pytest.raises(PolicyConnectionError, match="--allow-sim-policy"):
        service().open()
    s = service("--allow-sim-policy", "--tls-ca", "lab-ca.pem")
    assert s.request.tls_ca == "lab-ca.pem"
    try:
        s.open()
        assert s.policy.rig_check.ok
    finally:
        s.close()
