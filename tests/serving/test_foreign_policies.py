"""Policies trained elsewhere, served: a LeRobot pi0 folder (its 2025-09 processor layout with adapt_to_pi_aloha,
and its 2026 layout with relative actions) and an openpi PyTorch checkpoint (<step>/model.safetensors +
assets/<id>/norm_stats.json, no config.json), each written in exactly that layout from a tiny random pi0 with known
statistics, served by the real server (PolicyServer in a thread, or `workbench serve` as a child process) and
queried by openpi's unmodified client. The expected chunk is the model's normalized output turned into rig units
with THEIR statistics and conventions, computed here from their formulas (tests/finetune/foreign_helpers.py), from
an observation whose state was normalized the same way. Missing or malformed statistics give errors naming the
file and what to do."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune.foreign_policy import ForeignOptions, ForeignPolicyError
from finetune.model.pi0 import Pi0
from finetune.model_config import Pi0Config
from finetune.rig_check import compare_rigs
from foreign_helpers import (JOINT_NAMES, aloha_stats, lerobot_decode_state, lerobot_encode_actions,
                             lerobot_normalize, lerobot_unnormalize, model_output, observation, openpi_actions,
                             openpi_decode_state, openpi_stats, pad32, small_tokenizer, write_lerobot_folder,
                             write_openpi_checkpoint)
from serving.policies import load_served_policy
from serving.server import PolicyServer, ServeConfig
from wire_helpers import close, openpi_client
from workbench.config import load_rig_config, parse_rig_config, preset_text
from workbench.deploy.policy_launcher import LocalPolicyServer

PROMPT = "transfer the cube"
CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
A_MAP = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MIN_MAX"}
B_MAP = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "QUANTILES"}


def _model(seed: int, cams: tuple[str, ...] | None = None) -> Pi0:
    cfg = Pi0Config.variant("pi0_tiny")
    torch.manual_seed(seed)
    return Pi0(cfg.replace(camera_names=cams) if cams else cfg).eval()


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    return small_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def rig():
    return load_rig_config("sim-transfer-cube")


@pytest.fixture(scope="module")
def era_a(tmp_path_factory):
    """LeRobot 2025-09: one camera "top" (cam_high), two empty cameras, adapt_to_pi_aloha, actions MIN_MAX."""
    model = _model(0, ("top", "empty_camera_0", "empty_camera_1"))
    rng = np.random.default_rng(0)
    ss, acs = aloha_stats(rng), aloha_stats(rng)
    folder = write_lerobot_folder(tmp_path_factory.mktemp("lerobot_a") / "pretrained_model", model, state_stats=ss,
                                  action_stats=acs, norm_map=A_MAP, cameras=["top"], empty_cameras=2,
                                  adapt_to_pi_aloha=True)
    return folder, model, ss, acs


@pytest.fixture(scope="module")
def era_b(tmp_path_factory):
    """LeRobot 2026: the three ALOHA cameras by name, relative actions (grippers absolute), actions QUANTILES."""
    model = _model(1, CAMS)
    rng = np.random.default_rng(1)
    ss, acs = aloha_stats(rng), aloha_stats(rng)
    folder = write_lerobot_folder(tmp_path_factory.mktemp("lerobot_b") / "checkpoints" / "002000" / "pretrained_model",
                                  model, state_stats=ss, action_stats=acs, norm_map=B_MAP, cameras=list(CAMS),
                                  relative=True)
    return folder, model, ss, acs


@pytest.fixture(scope="module")
def openpi(tmp_path_factory):
    model = _model(2)
    stats = openpi_stats(np.random.default_rng(2))
    root = tmp_path_factory.mktemp("openpi") / "checkpoints" / "pi0_aloha" / "run"
    write_openpi_checkpoint(root, model, 1000, stats)
    write_openpi_checkpoint(root, model, 3000, stats)  # the newest step is served
    return root, model, stats


def _obs(rng: np.random.Generator, cams=CAMS, seed: int = 3) -> dict:
    state = rng.normal(0, 0.3, 14)
    state[[6, 13]] = rng.uniform(0.1, 0.9, 2)  # grippers in their normalized range
    return {"state": state, "images": {c: rng.integers(0, 256, (3, 48, 64), dtype=np.uint8) for c in cams},
            "prompt": PROMPT, "noise_seed": seed}


def _hwc(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(1, 2, 0))


def _served(policy):
    srv = PolicyServer(policy, ServeConfig(port=0))
    srv.start_in_thread()
    return srv


class _Serve(LocalPolicyServer):
    """`workbench serve` as a child process with the flags a foreign checkpoint takes."""

    def __init__(self, policy, *flags: str, **kw):
        super().__init__(policy, device="cpu", **kw)
        self.flags = list(flags)

    def command(self, ready_file: Path) -> list[str]:
        return super().command(ready_file) + self.flags


# ------------------------------------------------------------------------------------------------ LeRobot
def test_lerobot_adapt_to_pi_aloha_folder_served_to_openpi_client(era_a, tok, rig):
    folder, model, ss, acs = era_a
    policy = load_served_policy(folder, device="cpu", rig=rig,
                                foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))
    srv = _served(policy)
    client = openpi_client(srv.port)
    try:
        meta = client.get_server_metadata()
        assert meta["image_cameras"] == ["cam_high"] and meta["cameras"] == ["cam_high"]  # top -> cam_high
        conv = meta["conventions"]
        assert conv["source"] == "lerobot" and conv["adapt_to_pi_aloha"] is True
        assert conv["normalization"] == {"state": "MEAN_STD", "actions": "MIN_MAX"} and conv["eps"] == 1e-8
        assert conv["camera_map"] == {"top": "cam_high"} and conv["n_action_steps"] == 25
        assert meta["camera_subset"] is True and meta["joint_count"] == 14 and meta["control_hz"] is None
        widen = np.maximum(0.25 * (acs["q99"] - acs["q01"]), 0.05)  # the trained range: raw q01..q99, widened
        np.testing.assert_allclose(meta["action_bounds"]["lo"], acs["q01"] - widen, atol=1e-6)
        np.testing.assert_allclose(meta["action_bounds"]["hi"], acs["q99"] + widen, atol=1e-6)
        rng = np.random.default_rng(7)
        obs = _obs(rng, ("cam_high",))
        got = client.infer(obs)["actions"]
        # LeRobot's processor pipeline: normalize the raw state, then adapt it (flip, gripper -> angle)
        state_in = lerobot_decode_state(lerobot_normalize(obs["state"], "MEAN_STD", ss))
        out = model_output(model, observation(model, pad32(state_in), {"top": _hwc(obs["images"]["cam_high"])},
                                              tok, PROMPT), seed=3)
        want = lerobot_unnormalize(lerobot_encode_actions(out), "MIN_MAX", acs)
        assert got.shape == (50, 14)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
        # the state reaches the model normalized with their statistics: another normalization gives another chunk
        other_in = lerobot_decode_state((obs["state"] - ss["mean"]) / (ss["std"] + 1e-8) * 1.5)
        other = model_output(model, observation(model, pad32(other_in), {"top": _hwc(obs["images"]["cam_high"])},
                                                tok, PROMPT), seed=3)
        assert np.abs(lerobot_unnormalize(lerobot_encode_actions(other), "MIN_MAX", acs) - got).max() > 1e-3
    finally:
        close(client)
        srv.stop()


def test_lerobot_relative_actions_folder_served_by_workbench_serve(era_b, tok):
    folder, model, ss, acs = era_b
    server = _Serve(folder, "--config", "tiny", "--tokenizer", str(tok), rig="sim-transfer-cube")
    server.start()
    try:
        client = openpi_client(server.port)
        meta = client.get_server_metadata()
        assert meta["step"] == 2000 and meta["policy_type"] == "lerobot pi0"  # checkpoints/002000/pretrained_model
        mask = [("gripper" not in n) for n in JOINT_NAMES]
        assert meta["conventions"]["relative_actions"] == mask and meta["action_bounds"] is None
        obs = _obs(np.random.default_rng(8))
        got = client.infer(obs)["actions"]
        close(client)
        out = model_output(model, observation(model, pad32(lerobot_normalize(obs["state"], "MEAN_STD", ss)),
                                              {c: _hwc(obs["images"][c]) for c in CAMS}, tok, PROMPT), seed=3)
        want = lerobot_unnormalize(out, "QUANTILES", acs)
        want[:, mask] += obs["state"][mask]  # LeRobot's AbsoluteActionsProcessorStep: + the raw state
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ openpi
def test_openpi_checkpoint_served_by_workbench_serve_with_its_config(openpi, tok):
    root, model, stats = openpi
    server = _Serve(root, "--tokenizer", str(tok), policy_config="tiny")
    server.start()
    try:
        client = openpi_client(server.port)
        meta = client.get_server_metadata()
        assert meta["step"] == 3000 and meta["policy"].endswith("run/3000")
        conv = meta["conventions"]
        assert conv["source"] == "openpi" and conv["asset_id"] == "trossen" and conv["normalization"] == "z-score"
        assert conv["adapt_to_pi"] is True and conv["delta_joint_actions"] is True and conv["eps"] == 1e-6
        obs = _obs(np.random.default_rng(9), seed=11)
        got = client.infer(obs)["actions"]
        close(client)
        state_in = (openpi_decode_state(obs["state"]) - stats["state"]["mean"][:14]) / (stats["state"]["std"][:14]
                                                                                      + 1e-6)
        slots = {"base_0_rgb": "cam_high", "left_wrist_0_rgb": "cam_left_wrist", "right_wrist_0_rgb": "cam_right_wrist"}
        out = model_output(model, observation(model, pad32(state_in), {s: _hwc(obs["images"][c]) for s, c in
                                                                       slots.items()}, tok, PROMPT), seed=11)
        np.testing.assert_allclose(got, openpi_actions(out, obs["state"], stats), atol=2e-5, rtol=0)
    finally:
        server.stop()


def test_openpi_checkpoint_without_a_config_says_to_name_one(openpi, tok):
    root, _, _ = openpi
    with pytest.raises(ForeignPolicyError, match=r"--config NAME \(openpi: pi0_aloha, .*pi0_aloha_sim"):
        load_served_policy(root, foreign=ForeignOptions(tokenizer=str(tok)))
    with pytest.raises(ForeignPolicyError, match="unknown configuration 'pi0_alhoa'"):
        load_served_policy(root, foreign=ForeignOptions(config="pi0_alhoa", tokenizer=str(tok)))


def test_openpi_config_table_follows_openpi():
    from finetune.foreign_policy import openpi_config

    sim = openpi_config("pi0_aloha_sim")  # openpi: use_delta_joint_actions=False, one camera, "Transfer cube"
    assert (sim.delta_actions, sim.adapt_to_pi, sim.cameras, sim.default_prompt) == \
        (False, True, ("cam_high",), "Transfer cube")
    assert openpi_config("pi0_aloha_towel").delta_actions and openpi_config("pi0_aloha").asset_id == "trossen"
    assert openpi_config("tiny").model == "pi0_tiny" and openpi_config("pi0_small").model == "pi0_small"


# ------------------------------------------------------------------------------------------------ the rig check
def test_the_rig_check_covers_cameras_and_joint_count_and_says_what_it_could_not(era_a, tok, rig):
    folder, _, _, _ = era_a
    policy = load_served_policy(folder, device="cpu", rig=rig, foreign=ForeignOptions(config="tiny",
                                                                                      tokenizer=str(tok)))
    check = compare_rigs(policy.metadata(), rig)  # the robot side, from the announced metadata
    assert check.ok, check.differences
    assert "joint count (14)" in check.checked and any("cam_high" in c for c in check.checked)
    for what in ("joint names", "control rate", "backend kind", "gripper constants"):
        assert any(u.startswith(what) for u in check.unchecked), (what, check.unchecked)
    assert any("cam_left_wrist" in n for n in check.notes)  # rig cameras it does not read: said, not refused
    # a rig without the policy's camera: refused on the robot side ...
    no_high = parse_rig_config(preset_text("sim-transfer-cube").replace("[cameras.cam_high]", "[cameras.cam_low]"),
                               "<test>")
    refused = compare_rigs(policy.metadata(), no_high)
    assert not refused.ok and "missing ['cam_high']" in refused.differences[0]
    # ... and on the server side: no rig camera to map "top" to, both lists named, the flag to use said
    with pytest.raises(ForeignPolicyError, match=r"cameras \['top'\].*reads \['top', 'empty_camera_0', "
                                                 r"'empty_camera_1'\].*rig has \['cam_low'.*--camera-map top="):
        load_served_policy(folder, rig=no_high, foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))
    mapped = load_served_policy(folder, rig=no_high, foreign=ForeignOptions(
        config="tiny", tokenizer=str(tok), camera_map={"top": "cam_low"}))
    assert mapped.cameras == ("cam_low",)


def test_a_missing_tokenizer_file_is_named(era_a, tmp_path):
    with pytest.raises(ForeignPolicyError, match=r"nope\.model not found; pass the tokenizer .* --tokenizer PATH"):
        load_served_policy(era_a[0], foreign=ForeignOptions(config="tiny", tokenizer=str(tmp_path / "nope.model")))


def test_our_folders_refuse_foreign_flags(tok, tmp_path):
    from finetune.policy_folder import PolicyFolderError

    ours = tmp_path / "policy"  # refused before anything loads: the manifest is enough to say whose folder it is
    ours.mkdir()
    (ours / "policy.json").write_text(json.dumps({"format": "aloha-workbench/policy", "version": 1}))
    with pytest.raises(PolicyFolderError, match="--config --tokenizer describe a LeRobot or openpi checkpoint"):
        load_served_policy(ours, foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))


# ------------------------------------------------------------------------------------------------ bad statistics
def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy" / src.name
    shutil.copytree(src, dst)
    return dst


def _edit_stats(path: Path, fn) -> None:
    d = {k: v.clone() for k, v in load_file(str(path)).items()}
    fn(d)
    save_file(d, str(path))


def _drop_state(d: dict) -> None:
    for k in [k for k in d if k.startswith("observation.state.")]:
        d.pop(k)


PRE = "policy_preprocessor_step_6_normalizer_processor.safetensors"  # the 2026 layout: step 6
POST = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / "policy_postprocessor.json").unlink(), r"no policy_postprocessor\.json .*copy the whole"),
    (lambda f: (f / PRE).unlink(), rf"names statistics file {PRE}, which is missing"),
    (lambda f: _edit_stats(f / PRE, lambda d: d.pop("observation.state.std")),
     r"observation\.state: MEAN_STD normalization needs 'std'"),
    (lambda f: _edit_stats(f / POST, lambda d: d.update({"action.q99": d["action.q99"][:13]})),
     r"action\.q99 has 13 values, the feature has 14 dims"),
    (lambda f: _edit_stats(f / POST, lambda d: d["action.q01"].__setitem__(3, float("nan"))),
     r"action\.q01 has non-finite values at dims \[3\]"),
    (lambda f: _edit_stats(f / PRE, _drop_state),
     r"no statistics for 'observation\.state' \(MEAN_STD normalization needs them\)"),
    (lambda f: (f / "policy_postprocessor.json").write_text("{not json"), r"not valid JSON"),
    (lambda f: (f / "policy_preprocessor.json").write_text(json.dumps(
        {"name": "policy_preprocessor", "steps": [{"registry_name": "image_crop_resize_processor", "config": {}}]})),
     r"processor steps \['image_crop_resize_processor'\]"),
], ids=["no-postprocessor", "no-stats-file", "no-std", "short-q99", "nan-q01", "no-state-stats", "bad-json",
        "unknown-step"])
def test_missing_or_malformed_lerobot_statistics_are_named(era_b, tok, tmp_path, breakage, message):
    folder = _copy(era_b[0], tmp_path)
    breakage(folder)
    with pytest.raises(ForeignPolicyError, match=message):
        load_served_policy(folder, foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))


def test_a_lerobot_folder_from_before_the_processors_gets_the_migration_command(era_b, tok, tmp_path):
    folder = _copy(era_b[0], tmp_path)
    for p in folder.glob("policy_*"):
        p.unlink()
    weights = load_file(str(folder / "model.safetensors"))
    weights["normalize_inputs.buffer_observation_state.mean"] = torch.zeros(14)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ForeignPolicyError, match="before its processor pipeline.*migrate_policy_normalization.py"):
        load_served_policy(folder, foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))


def _two_assets(ckpt: Path) -> None:
    shutil.copytree(ckpt / "assets" / "trossen", ckpt / "assets" / "lerobot" / "aloha_sim")
    shutil.move(ckpt / "assets" / "trossen", ckpt / "assets" / "other")


def _pi05(ckpt: Path) -> None:
    weights = load_file(str(ckpt / "model.safetensors"))
    weights["time_mlp_in.weight"] = weights.pop("action_time_mlp_in.weight")[:, :32].contiguous()
    save_file(weights, str(ckpt / "model.safetensors"))


def _openpi_copy(openpi, tmp_path: Path) -> Path:
    return _copy(openpi[0] / "3000", tmp_path)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: shutil.rmtree(d / "assets"), r"no assets/<asset_id>/norm_stats\.json .*compute_norm_stats"),
    (lambda d: _two_assets(d),
     r"several assets \['lerobot/aloha_sim', 'other'\]: say which with --asset-id"),
    (lambda d: (d / "assets" / "trossen" / "norm_stats.json").write_text(json.dumps({"state": {}})),
     r"openpi's norm stats layout"),
    (lambda d: (d / "assets" / "trossen" / "norm_stats.json").write_text(json.dumps(
        {"norm_stats": {"state": {"mean": [0.0] * 10, "std": [1.0] * 10}, "actions": {"mean": [0.0] * 32,
                                                                                     "std": [1.0] * 32}}})),
     r"state statistics have shape \[10\], need at least 14"),
    (lambda d: (d / "assets" / "trossen" / "norm_stats.json").write_text(json.dumps(
        {"norm_stats": {"state": {"mean": [0.0] * 14, "std": [1.0] * 14}}})), r"no 'actions' statistics"),
    (_pi05, r"is a pi0\.5 checkpoint"),
], ids=["no-assets", "two-assets", "bad-layout", "short-state", "no-actions", "pi05"])
def test_missing_or_malformed_openpi_statistics_are_named(openpi, tok, tmp_path, breakage, message):
    ckpt = _openpi_copy(openpi, tmp_path)
    breakage(ckpt)
    with pytest.raises(ForeignPolicyError, match=message):
        load_served_policy(ckpt, foreign=ForeignOptions(config="tiny", tokenizer=str(tok)))


def test_an_openpi_asset_id_with_a_slash_is_found_by_name(openpi, tok, tmp_path):
    ckpt = _openpi_copy(openpi, tmp_path)
    shutil.copytree(ckpt / "assets" / "trossen", ckpt / "assets" / "lerobot" / "aloha_sim_transfer_cube_human")
    policy = load_served_policy(ckpt, foreign=ForeignOptions(config="pi0_tiny", tokenizer=str(tok),
                                                             asset_id="lerobot/aloha_sim_transfer_cube_human"))
    assert policy.metadata()["conventions"]["asset_id"] == "lerobot/aloha_sim_transfer_cube_human"
