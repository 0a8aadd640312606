"""Checkpoints in the layouts other code bases write, built from a tiny random pi0 with known statistics, and the
expected results computed from those code bases' formulas, written out here independently of the code under test
(finetune.foreign_policy, finetune.foreign_transforms).

- LeRobot (src/lerobot/policies/pi0, src/lerobot/processor): config.json (draccus dump of PI0Config, "type":
  "pi0"), model.safetensors (the policy's state dict: `model.` prefix, tied embedding stored once),
  policy_preprocessor.json / policy_postprocessor.json ({"name", "steps": [{"registry_name", "config",
  "state_file"}]}) and policy_{pre,post}processor_step_<i>_{normalizer,unnormalizer}_processor.safetensors
  ("<feature>.<stat>" keys, every dataset feature's statistics, images included).
- openpi (scripts/train_pytorch.py): <checkpoint_dir>/<step>/model.safetensors (PI0Pytorch keys via
  safetensors.torch.save_model: the tied pair stored under lm_head), optimizer.pt, metadata.pt,
  assets/<asset_id>/norm_stats.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from finetune.model.pi0 import Observation, Pi0
from finetune.tokenizer import PromptTokenizer, train_small_tokenizer
from drivers.cameras.resize import resize_with_pad

TIED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
JOINT_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in
               ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")]
_TOKENIZERS: dict[str, Path] = {}


def small_tokenizer(tmp_root: Path) -> Path:
    """The small SentencePiece model the tiny pi0 (vocab 512) reads, trained once per session."""
    if "t" not in _TOKENIZERS:
        folder = Path(tmp_root) / "tokenizer"
        folder.mkdir(parents=True, exist_ok=True)
        _TOKENIZERS["t"] = train_small_tokenizer(folder)
    return _TOKENIZERS["t"]


def _weights(model: Pi0, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != TIED}


# ------------------------------------------------------------------------------------------------ LeRobot
def aloha_stats(rng: np.random.Generator, dim: int = 14) -> dict[str, np.ndarray]:
    """Dataset statistics as LeRobot computes them (mean, std, min, max, q01..q99, count)."""
    mean = rng.normal(0, 0.5, dim)
    std = rng.uniform(0.2, 0.9, dim)
    q01, q99 = mean - 2.0 * std, mean + 2.2 * std
    return {"mean": mean, "std": std, "min": q01 - 0.3, "max": q99 + 0.4, "q01": q01, "q99": q99,
            "q10": mean - std, "q90": mean + 1.1 * std, "count": np.array([1000.0])}


def write_lerobot_folder(folder: Path, model: Pi0, *, state_stats: Mapping[str, np.ndarray],
                         action_stats: Mapping[str, np.ndarray], norm_map: Mapping[str, str],
                         cameras: Sequence[str], empty_cameras: int = 0, adapt_to_pi_aloha: bool | None = None,
                         relative: bool = False, rename_map: Mapping[str, str] | None = None,
                         eps: float = 1e-8) -> Path:
    """A LeRobot pi0 checkpoint folder (pretrained_model/). adapt_to_pi_aloha None: the 2026 config (paligemma
    variants, relative actions, no adapt key); True/False: the 2025-09 processor-era config (adapt key present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    feats_in = {f"observation.images.{cam}": {"type": "VISUAL", "shape": [3, 480, 640]} for cam in cameras}
    feats_in["observation.state"] = {"type": "STATE", "shape": [14]}
    feats_out = {"action": {"type": "ACTION", "shape": [14]}}
    cfg: dict[str, Any] = {
        "type": "pi0", "n_obs_steps": 1, "input_features": feats_in, "output_features": feats_out,
        "device": "cpu", "use_amp": False, "push_to_hub": False, "repo_id": None, "private": None, "tags": None,
        "license": None, "pretrained_path": None, "chunk_size": c.action_horizon, "n_action_steps": 25,
        "normalization_mapping": dict(norm_map), "max_state_dim": c.state_dim, "max_action_dim": c.action_dim,
        "empty_cameras": empty_cameras, "tokenizer_max_length": c.max_token_len,
    }
    if adapt_to_pi_aloha is None:  # LeRobot 2026 (policies/pi0/configuration_pi0.py at HEAD)
        cfg.update({"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "dtype": "float32",
                    "num_inference_steps": c.num_steps, "min_period": c.time_min_period,
                    "max_period": c.time_max_period, "use_relative_actions": relative,
                    "relative_exclude_joints": ["gripper"], "action_feature_names": JOINT_NAMES,
                    "image_resolution": [224, 224], "rtc_config": None})
    else:  # LeRobot 2025-09 (processor pipeline, adapt_to_pi_aloha still in the config)
        cfg.update({"resize_imgs_with_padding": [224, 224], "adapt_to_pi_aloha": adapt_to_pi_aloha,
                    "use_delta_joint_actions_aloha": False, "proj_width": 1024, "num_steps": c.num_steps,
                    "use_cache": True, "attention_implementation": "eager"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    save_file(_weights(model, "model."), str(folder / "model.safetensors"), metadata={"format": "pt"})

    stats = {"observation.state": dict(state_stats), "action": dict(action_stats)}
    for cam in cameras:  # image statistics are in the file too (IDENTITY: unused)
        stats[f"observation.images.{cam}"] = {"mean": np.full((3, 1, 1), 0.45), "std": np.full((3, 1, 1), 0.25)}

    def st(feats: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {f"{k}.{s}": torch.as_tensor(np.asarray(v, np.float32)) for k, d in stats.items() if k in feats
                for s, v in d.items()}

    all_feats = {**feats_in, **feats_out}
    norm_cfg = {"eps": eps, "features": all_feats, "norm_map": dict(norm_map)}
    pre_steps: list[dict[str, Any]] = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": dict(rename_map or {})}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "pi0_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": {"max_length": c.max_token_len, "task_key": "task",
                                                            "padding_side": "right", "padding": "max_length",
                                                            "truncation": True,
                                                            "tokenizer_name": "google/paligemma-3b-pt-224"}},
        {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
    ]
    if adapt_to_pi_aloha is None:
        pre_steps.append({"registry_name": "relative_actions_processor",
                          "config": {"enabled": relative, "exclude_joints": ["gripper"], "action_names": JOINT_NAMES}})
    i = len(pre_steps)
    pre_steps.append({"registry_name": "normalizer_processor", "config": norm_cfg,
                      "state_file": f"policy_preprocessor_step_{i}_normalizer_processor.safetensors"})
    save_file(st(all_feats), str(folder / pre_steps[-1]["state_file"]))
    post_steps: list[dict[str, Any]] = [
        {"registry_name": "unnormalizer_processor", "config": {"eps": eps, "features": feats_out,
                                                               "norm_map": dict(norm_map)},
         "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"}]
    save_file(st(feats_out), str(folder / post_steps[0]["state_file"]))
    if adapt_to_pi_aloha is None:
        post_steps.append({"registry_name": "absolute_actions_processor", "config": {"enabled": relative}})
    post_steps.append({"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}})
    (folder / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": pre_steps},
                                                                indent=2))
    (folder / "policy_postprocessor.json").write_text(json.dumps({"name": "policy_postprocessor",
                                                                  "steps": post_steps}, indent=2))
    return folder


# LeRobot's normalizer / unnormalizer (processor/normalize_processor.py), one feature
def lerobot_normalize(x: np.ndarray, mode: str, s: Mapping[str, np.ndarray], eps: float = 1e-8) -> np.ndarray:
    if mode == "MEAN_STD":
        return (x - s["mean"]) / (s["std"] + eps)
    lo, hi = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
    d = np.where(s[hi] - s[lo] == 0, eps, s[hi] - s[lo])
    return 2.0 * (x - s[lo]) / d - 1.0


def lerobot_unnormalize(x: np.ndarray, mode: str, s: Mapping[str, np.ndarray], eps: float = 1e-8) -> np.ndarray:
    if mode == "MEAN_STD":
        return x * s["std"] + s["mean"]
    lo, hi = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
    d = np.where(s[hi] - s[lo] == 0, eps, s[hi] - s[lo])
    return (x + 1.0) / 2.0 * d + s[lo]


# LeRobot's adapt_to_pi_aloha (policies/pi0/modeling_pi0.py, 2025-09)
def lerobot_decode_state(state: np.ndarray) -> np.ndarray:
    s = np.array(state, np.float64)
    s[[1, 2, 8, 9]] *= -1
    x = s[[6, 13]] * (0.05800 - 0.01844) + 0.01844
    angle = np.arcsin(np.clip((0.022 ** 2 + x ** 2 - 0.036 ** 2) / (2 * 0.022 * x), -1.0, 1.0))
    s[[6, 13]] = (angle - 0.4) / (1.5 - 0.4)
    return s


def lerobot_encode_actions(actions: np.ndarray) -> np.ndarray:
    a = np.array(actions, np.float64)
    a[:, [1, 2, 8, 9]] *= -1
    a[:, [6, 13]] = (a[:, [6, 13]] * (1.5 - 0.4) + 0.4 + 0.6213) / (1.4910 + 0.6213)
    return a


# ------------------------------------------------------------------------------------------------ openpi
def write_openpi_checkpoint(checkpoint_dir: Path, model: Pi0, step: int, stats: Mapping[str, Mapping[str, Any]],
                            asset_id: str = "trossen") -> Path:
    """<checkpoint_dir>/<step>/ as openpi's train_pytorch.py saves it."""
    d = Path(checkpoint_dir) / str(step)
    d.mkdir(parents=True, exist_ok=True)
    save_file(_weights(model, ""), str(d / "model.safetensors"))
    torch.save({"global_step": step, "timestamp": 0.0}, d / "metadata.pt")
    torch.save({"state": {}, "param_groups": []}, d / "optimizer.pt")
    path = d / "assets" / asset_id / "norm_stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"norm_stats": {k: {n: np.asarray(v).tolist() for n, v in s.items()}
                                               for k, s in stats.items()}}, indent=2))
    return d


def openpi_stats(rng: np.random.Generator, dim: int = 32) -> dict[str, dict[str, np.ndarray]]:
    """openpi's norm stats (mean, std, q01, q99), padded to the model's 32 dims as its compute_norm_stats writes."""
    out = {}
    for key in ("state", "actions"):
        mean, std = np.zeros(dim), np.zeros(dim)
        mean[:14], std[:14] = rng.normal(0, 0.4, 14), rng.uniform(0.2, 0.8, 14)
        out[key] = {"mean": mean, "std": std, "q01": mean - 2 * std, "q99": mean + 2 * std}
    return out


# openpi's AlohaInputs / AlohaOutputs (policies/aloha_policy.py) + Normalize / DeltaActions (transforms.py)
FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1], np.float64)
DELTA = np.array([True] * 6 + [False] + [True] * 6 + [False])


def openpi_decode_state(state: np.ndarray) -> np.ndarray:
    s = FLIP * np.asarray(state, np.float64)
    x = s[[6, 13]] * (0.05800 - 0.01844) + 0.01844
    angle = np.arcsin(np.clip((0.022 ** 2 + x ** 2 - 0.036 ** 2) / (2 * 0.022 * x), -1.0, 1.0))
    s[[6, 13]] = (angle - 0.5476) / (1.6296 - 0.5476)
    return s


def openpi_actions(model_out14: np.ndarray, state: np.ndarray, stats: Mapping[str, Mapping[str, np.ndarray]],
                   delta: bool = True) -> np.ndarray:
    """Model output -> ALOHA actions: unnormalize (std + 1e-6), absolute joints (pi-space state), encode."""
    a = model_out14 * (stats["actions"]["std"][:14] + 1e-6) + stats["actions"]["mean"][:14]
    if delta:
        a[:, DELTA] += openpi_decode_state(state)[DELTA]
    a = FLIP * a
    a[:, [6, 13]] = (a[:, [6, 13]] + 0.5476 + 0.6213) / (1.4910 + 0.6213)
    return a


# ------------------------------------------------------------------------------------------------ the model run
def observation(model: Pi0, state32: np.ndarray, frames: Mapping[str, np.ndarray | None],
                tokenizer: Path, prompt: str) -> Observation:
    """A batch-1 Observation: frames by model slot (None: a masked blank), resized with padding and scaled to
    [-1, 1] as pi0 reads them; the state already normalized and padded."""
    c = model.config
    tp = PromptTokenizer(tokenizer, max_len=c.max_token_len).tokenize(prompt)
    images, masks = {}, {}
    for slot in c.camera_names:
        img = frames.get(slot)
        present = img is not None
        img = resize_with_pad(img, c.vision.image_size) if present else \
            np.zeros((c.vision.image_size,) * 2 + (3,), np.uint8)
        images[slot] = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] / 255.0 * 2.0 - 1.0
        masks[slot] = torch.tensor([present])
    return Observation(images=images, image_masks=masks, tokens=torch.from_numpy(tp.tokens)[None],
                       token_mask=torch.from_numpy(tp.mask)[None],
                       state=torch.from_numpy(np.asarray(state32, np.float32))[None])


def model_output(model: Pi0, obs: Observation, seed: int) -> np.ndarray:
    """The model's normalized chunk for noise seed `seed` (standard normal from torch.Generator(seed)) -> [H, 14]."""
    c = model.config
    noise = torch.randn(1, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model.sample_actions(obs, noise=noise)
    return out[0, :, :14].double().numpy()


def pad32(x: np.ndarray) -> np.ndarray:
    out = np.zeros(32)
    out[: len(x)] = x
    return out
