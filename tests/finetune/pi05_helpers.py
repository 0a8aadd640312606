"""Shared helpers for the pi0.5 tests (imported by test modules; not a test module itself)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from finetune.model_config import Pi0Config
from finetune.model.pi05 import Pi05
from pi0_helpers import PREFIX, reference_hub_keys

PI05_TINY = Pi0Config.variant("pi05_tiny")


def reference_pi05_hub_keys(cfg: Pi0Config, with_expert_lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    """The key -> shape layout of `lerobot/pi05_base`, written from the reference notes (pi05.md: "keys as for
    pi0, with" the differences below), independently of the model's modules."""
    keys = reference_hub_keys(cfg, with_expert_lm_head)
    e = cfg.expert
    for name in ("state_proj", "action_time_mlp_in", "action_time_mlp_out"):  # gone in pi0.5
        del keys[name + ".weight"], keys[name + ".bias"]
    expert = PREFIX + "gemma_expert.model."
    norms = [f"{expert}layers.{n}.{ln}" for n in range(e.depth)
             for ln in ("input_layernorm", "post_attention_layernorm")] + [expert + "norm"]
    for norm in norms:  # plain norm weight -> the adaRMS modulation Linear(cond 1024 -> 3 x 1024)
        del keys[norm + ".weight"]
        keys[norm + ".dense.weight"] = (3 * e.width, e.width)
        keys[norm + ".dense.bias"] = (3 * e.width,)
    for name in ("time_mlp_in", "time_mlp_out"):
        keys[name + ".weight"] = (e.width, e.width)
        keys[name + ".bias"] = (e.width,)
    return keys


def tiny_pi05(seed: int = 0, modulation_std: float = 0.2, **changes) -> Pi05:
    """A tiny pi0.5 with random (not openpi's zero) modulation, so the adaptive norms do something."""
    torch.manual_seed(seed)
    model = Pi05(PI05_TINY.replace(**changes))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dense." in name:
                p.copy_(torch.randn(p.shape, generator=g) * modulation_std)
    return model.eval()


def write_pi05_hub_style(folder, cfg: Pi0Config, drop=(), reshape=None, seed=0) -> dict[str, torch.Tensor]:
    """A pi0.5 checkpoint as the hub stores it (reference layout, float32, tied embed_tokens absent, the unused
    expert lm_head present), with safetensors' own writer."""
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn((reshape or {}).get(k, s), generator=g) * 0.05
               for k, s in reference_pi05_hub_keys(cfg).items() if k not in drop}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors



# ------------------------------------------------------------------------------------------------ LeRobot pi0.5
def write_lerobot_pi05_folder(folder, model: Pi05, *, state_stats, action_stats, cameras, era: str = "2026",
                              norm_map=None, eps: float = 1e-8, memory: bool = False):
    """A LeRobot pi0.5 checkpoint folder (pretrained_model/) as its PI05Policy.save_pretrained and processors
    write it (src/lerobot/policies/pi05/{configuration,processor}_pi05.py): config.json ("type": "pi05"),
    model.safetensors (`model.` prefix, tied embedding once), policy_{pre,post}processor.json with the
    normalizer's statistics files. era "2025": LeRobot 2025-10 (no relative-actions fields; its state prompt was
    padded to max_state_dim); "2026": relative actions on (grippers absolute), the prompt unpadded."""
    import json
    from pathlib import Path

    import numpy as np

    from foreign_helpers import JOINT_NAMES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    norm_map = dict(norm_map or {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"})
    feats_in = {f"observation.images.{cam}": {"type": "VISUAL", "shape": [3, 480, 640]} for cam in cameras}
    feats_in["observation.state"] = {"type": "STATE", "shape": [14]}
    feats_out = {"action": {"type": "ACTION", "shape": [14]}}
    relative = era == "2026"
    cfg = {"type": "pi05", "n_obs_steps": 1, "input_features": feats_in, "output_features": feats_out,
           "device": "cpu", "use_amp": False, "push_to_hub": False, "repo_id": None, "paligemma_variant": "gemma_2b",
           "action_expert_variant": "gemma_300m", "dtype": "float32", "chunk_size": c.action_horizon,
           "n_action_steps": 50, "max_state_dim": c.state_dim, "max_action_dim": c.action_dim,
           "num_inference_steps": c.num_steps, "time_sampling_beta_alpha": 1.5, "time_sampling_beta_beta": 1.0,
           "time_sampling_scale": 0.999, "time_sampling_offset": 0.001, "min_period": c.time_min_period,
           "max_period": c.time_max_period, "image_resolution": [224, 224], "empty_cameras": 0,
           "tokenizer_max_length": c.max_token_len, "normalization_mapping": norm_map,
           "gradient_checkpointing": False, "compile_model": False, "freeze_vision_encoder": False,
           "train_expert_only": False, "optimizer_lr": 2.5e-5}
    if relative:
        cfg.update({"use_relative_actions": True, "relative_exclude_joints": ["gripper"],
                    "action_feature_names": JOINT_NAMES, "rtc_config": None})
    if memory:
        cfg.update({"use_visual_memory": False, "use_proprioceptive_memory": True, "memory_frames": 6})
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    tied = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    save_file({"model." + k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != tied},
              str(folder / "model.safetensors"), metadata={"format": "pt"})

    stats = {"observation.state": dict(state_stats), "action": dict(action_stats)}
    for cam in cameras:
        stats[f"observation.images.{cam}"] = {"mean": np.full((3, 1, 1), 0.45), "std": np.full((3, 1, 1), 0.25)}

    def st(feats) -> dict[str, torch.Tensor]:
        return {f"{k}.{s}": torch.as_tensor(np.asarray(v, np.float32)) for k, d in stats.items() if k in feats
                for s, v in d.items()}

    all_feats = {**feats_in, **feats_out}
    pre = [{"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
           {"registry_name": "to_batch_processor", "config": {}}]
    if relative:
        pre.append({"registry_name": "relative_actions_processor",
                    "config": {"enabled": True, "exclude_joints": ["gripper"], "action_names": JOINT_NAMES}})
    i = len(pre)
    pre.append({"registry_name": "normalizer_processor",
                "config": {"eps": eps, "features": all_feats, "norm_map": norm_map},
                "state_file": f"policy_preprocessor_step_{i}_normalizer_processor.safetensors"})
    save_file(st(all_feats), str(folder / pre[-1]["state_file"]))
    prompt_cfg = {"max_state_dim": c.state_dim, "task_key": "task"}
    if era == "2026":
        prompt_cfg["include_state_in_prompt"] = not memory
    pre += [{"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": prompt_cfg},
            {"registry_name": "tokenizer_processor", "config": {"max_length": c.max_token_len, "task_key": "task",
                                                                "padding_side": "right", "padding": "max_length",
                                                                "truncation": True,
                                                                "tokenizer_name": "google/paligemma-3b-pt-224"}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}]
    post = [{"registry_name": "unnormalizer_processor",
             "config": {"eps": eps, "features": feats_out, "norm_map": norm_map},
             "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"}]
    save_file(st(feats_out), str(folder / post[0]["state_file"]))
    if relative:
        post.append({"registry_name": "absolute_actions_processor", "config": {"enabled": True}})
    post.append({"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}})
    (folder / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": pre}))
    (folder / "policy_postprocessor.json").write_text(json.dumps({"name": "policy_postprocessor", "steps": post}))
    return folder


def openpi_state_prompt_ids(tokenizer_file, task: str, normalized_state) -> list[int]:
    """openpi's PaligemmaTokenizer.tokenize(prompt, state) (src/openpi/models/tokenizer.py), written out: the
    cleaned task, the state digitized into 256 bins over [-1, 1], BOS first (sentencepiece's own add_bos)."""
    import numpy as np
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_file))
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    bins = np.digitize(normalized_state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
    return sp.encode(f"Task: {cleaned}, State: {' '.join(map(str, bins))};\nAction: ", add_bos=True)
