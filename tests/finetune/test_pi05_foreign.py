"""A LeRobot-trained pi0.5 folder served like a LeRobot-trained pi0 (finetune.foreign_policy): written in LeRobot's
layout from a tiny random pi0.5 with known statistics (tests/finetune/pi05_helpers.py), served by the real server
to openpi's unmodified client. The expected chunk is computed here from LeRobot's and openpi's formulas: the state
normalized with its quantiles, written into openpi's prompt (14 dims since LeRobot 2026-03, padded to 32 before),
the model's output unnormalized with the action quantiles (and made absolute where LeRobot's relative actions
are on)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune.foreign_policy import ForeignOptions, ForeignPolicyError, load_foreign_policy
from foreign_helpers import (JOINT_NAMES, aloha_stats, lerobot_normalize, lerobot_unnormalize, model_output,
                             observation, pad32, small_tokenizer)
from pi05_helpers import openpi_state_prompt_ids, tiny_pi05, write_lerobot_pi05_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

PROMPT = "transfer the cube"
CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    return small_tokenizer(tmp_path_factory.mktemp("tok"))


def _folder(tmp_path, era: str, seed: int, **kw):
    model = tiny_pi05(seed, camera_names=CAMS)
    rng = np.random.default_rng(seed)
    ss, acs = aloha_stats(rng), aloha_stats(rng)
    folder = write_lerobot_pi05_folder(tmp_path / "checkpoints" / "004000" / "pretrained_model", model,
                                       state_stats=ss, action_stats=acs, cameras=CAMS, era=era, **kw)
    return folder, model, ss, acs


def _obs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = rng.normal(0, 0.3, 14)
    state[[6, 13]] = rng.uniform(0.1, 0.9, 2)
    return {"state": state, "images": {c: rng.integers(0, 256, (3, 48, 64), dtype=np.uint8) for c in CAMS},
            "prompt": PROMPT, "noise_seed": 3}


def _expected_chunk(model, tok, obs: dict, state_norm: np.ndarray, prompt_state: np.ndarray) -> np.ndarray:
    """The model's normalized chunk for noise seed 3 on openpi's prompt of `prompt_state`."""
    hwc = {c: np.ascontiguousarray(obs["images"][c].transpose(1, 2, 0)) for c in CAMS}
    o = observation(model, pad32(state_norm), hwc, tok, PROMPT)
    ids = openpi_state_prompt_ids(tok, PROMPT, prompt_state)
    tokens = torch.zeros(1, model.config.max_token_len, dtype=torch.long)
    tokens[0, :len(ids)] = torch.tensor(ids)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, :len(ids)] = True
    return model_output(model, dataclasses.replace(o, tokens=tokens, token_mask=mask), seed=3)


def test_a_lerobot_pi05_folder_is_served_to_openpis_client(tmp_path, tok):
    from serving.policies import load_served_policy
    from serving.server import PolicyServer, ServeConfig
    from wire_helpers import close, openpi_client
    from workbench.config import load_rig_config

    folder, model, ss, acs = _folder(tmp_path, "2026", 5)
    policy = load_served_policy(folder, device="cpu", rig=load_rig_config("sim-transfer-cube"),
                                foreign=ForeignOptions(config="pi05_tiny", tokenizer=str(tok)))
    srv = PolicyServer(policy, ServeConfig(port=0))
    srv.start_in_thread()
    client = openpi_client(srv.port)
    try:
        meta = client.get_server_metadata()
        assert meta["policy_type"] == "lerobot pi0.5" and meta["step"] == 4000 and meta["model"] == "pi05_tiny"
        conv = meta["conventions"]
        assert conv["normalization"] == {"state": "QUANTILES", "actions": "QUANTILES"}
        assert conv["state_in_prompt"].startswith("14 dims, unpadded")
        obs = _obs(7)
        got = client.infer(obs)["actions"]
        state_norm = lerobot_normalize(obs["state"], "QUANTILES", ss)
        out = _expected_chunk(model, tok, obs, state_norm, state_norm)  # the 14 normalized dims in the prompt
        want = lerobot_unnormalize(out, "QUANTILES", acs)
        rel = np.array(["gripper" not in n for n in JOINT_NAMES])
        want[:, rel] += obs["state"][rel]  # LeRobot's AbsoluteActionsProcessorStep: + the raw state
        assert got.shape == (50, 14)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
        # the state is read through the prompt: the padded prompt (another format) gives another chunk
        padded = lerobot_unnormalize(_expected_chunk(model, tok, obs, state_norm, pad32(state_norm)), "QUANTILES",
                                     acs)
        padded[:, rel] += obs["state"][rel]
        assert np.abs(padded - got).max() > 1e-3
    finally:
        close(client)
        srv.stop()


def test_a_2025_lerobot_pi05_folder_pads_the_prompts_state_as_it_trained(tmp_path, tok):
    folder, model, ss, acs = _folder(tmp_path, "2025", 6)
    runtime = load_foreign_policy(folder, options=ForeignOptions(config="pi05-tiny", tokenizer=str(tok)))
    assert runtime.metadata()["conventions"]["state_in_prompt"].startswith("32 dims, padded")
    obs = _obs(8)
    hwc = {c: np.ascontiguousarray(v.transpose(1, 2, 0)) for c, v in obs["images"].items()}
    got = runtime.infer(obs["state"], hwc, PROMPT, seed=3)
    state_norm = lerobot_normalize(obs["state"], "QUANTILES", ss)
    want = lerobot_unnormalize(_expected_chunk(model, tok, obs, state_norm, pad32(state_norm)), "QUANTILES", acs)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_lerobot_pi05_folders_it_cannot_serve_are_refused_with_the_reason(tmp_path, tok):
    folder, _, _, _ = _folder(tmp_path / "a", "2026", 9)
    with pytest.raises(ForeignPolicyError, match=r"--config tiny names a pi0 model \(pi0_tiny\), but this LeRobot "
                                                 r"folder holds a pi0.5 policy"):
        load_foreign_policy(folder, options=ForeignOptions(config="tiny", tokenizer=str(tok)))
    mem, _, _, _ = _folder(tmp_path / "b", "2026", 9, memory=True)
    with pytest.raises(ForeignPolicyError, match="use_proprioceptive_memory set: LeRobot's pi0.5 with MEM"):
        load_foreign_policy(mem, options=ForeignOptions(config="pi05_tiny", tokenizer=str(tok)))
