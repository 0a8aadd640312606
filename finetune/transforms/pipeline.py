"""`PolicyTransforms`: the one chain from rig data to pi0 inputs and from pi0 outputs back to rig actions.

Training (finetune.data) and serving both call these methods, built from the same (TransformConfig, norm stats,
tokenizer) that the policy folder stores, so the two cannot drift apart:

    pt = PolicyTransforms.from_folder(policy_dir, tokenizer)
    obs = pt.observation(state14, {"cam_high": img, "cam_left_wrist": img, ...}, "transfer the cube")
    rig_actions = pt.actions(model.sample_actions(obs)[0], state14)          # [50, 14] rig units

pi0.5 (config.discrete_state_input): the prompt carries the normalized state (`prompt_tokens`), so a sample's
tokens depend on its state; the training dataset must take them from `prompt_tokens` as serving does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from finetune.model.pi0 import Observation
from finetune.normalize import NormStats, load_norm_stats, save_norm_stats
from finetune.tokenizer import PromptTokenizer, TokenizedPrompt
from finetune.transforms.config import TransformConfig
from drivers.cameras.resize import resize_with_pad
from finetune.transforms.images import blank, rename_cameras, to_unit_range
from finetune.transforms.prompt import tokenize_state_prompt
from finetune.transforms.vectors import Vectors, vector_chain

NORM_STATS_FILE = "norm_stats.json"
Augment = Callable[[str, np.ndarray], np.ndarray]  # (slot, uint8 SxSx3) -> uint8 SxSx3


class PolicyTransforms:
    def __init__(self, config: TransformConfig, norm_stats: Mapping[str, NormStats],
                 tokenizer: PromptTokenizer | None = None) -> None:
        self.config = config
        self.norm_stats = dict(norm_stats)
        self.tokenizer = tokenizer
        self.vectors = vector_chain(config, self.norm_stats)
        self._tokens: dict[str, TokenizedPrompt] = {}

    # -- pieces (the training dataset calls these per sample) --------------------------------------------------
    def state_actions(self, state: np.ndarray, actions: np.ndarray | None = None) -> Vectors:
        """Rig units -> model space: state [..., 14] -> [..., 32]; actions [..., H, 14] -> [..., H, 32]."""
        self._check_dim(state, "state")
        if actions is not None:
            self._check_dim(actions, "actions")
        return self.vectors.forward(Vectors(np.asarray(state), None if actions is None else np.asarray(actions)))

    def images(self, frames: Mapping[str, np.ndarray | None], augment: Augment | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        """Rig camera frames (HxWx3 uint8 by rig name) -> {slot: 3xSxS float32 in [-1, 1]}, {slot: present}."""
        cfg = self.config
        by_slot, masks = rename_cameras(frames, cfg.camera_map, cfg.camera_slots)
        out = {}
        for slot, img in by_slot.items():
            if img is None:
                img = blank(cfg.image_size)
            else:
                img = resize_with_pad(img, cfg.image_size)
                if augment is not None:
                    img = augment(slot, img)
            out[slot] = to_unit_range(img)
        return out, masks

    def tokenize(self, prompt: str) -> TokenizedPrompt:
        if self.tokenizer is None:
            raise ValueError("these transforms were built without a tokenizer; pass one to tokenize prompts")
        tp = self._tokens.get(prompt)
        if tp is None:
            tp = self._tokens[prompt] = self.tokenizer.tokenize(prompt)
        return tp

    def prompt_tokens(self, prompt: str, model_state: np.ndarray) -> TokenizedPrompt:
        """The prompt the model reads for one sample: pi0's (task only, cached) or, with discrete_state_input
        (pi0.5), openpi's "Task: ..., State: <bins>;\nAction: " from the normalized, padded state [state_dim], of
        which the first `config.prompt_state_dims` (openpi: the rig's dims; None: all) are written."""
        if not self.config.discrete_state_input:
            return self.tokenize(prompt)
        if self.tokenizer is None:
            raise ValueError("these transforms were built without a tokenizer; pass one to tokenize prompts")
        n = self.config.prompt_state_dims
        return tokenize_state_prompt(self.tokenizer, prompt, np.asarray(model_state)[:n] if n else model_state)

    # -- serving ------------------------------------------------------------------------------------------------
    def observation(self, state: np.ndarray, images: Mapping[str, np.ndarray], prompt: str,
                    device: torch.device | str = "cpu") -> Observation:
        """One rig observation (14 follower joints in rig units, frames by rig camera name, prompt) -> a batch-1
        Observation for the model."""
        state = np.asarray(state, dtype=np.float64)
        if state.ndim != 1:
            raise ValueError(f"state must be one vector of {self.config.rig_dim} joints, got shape {state.shape}")
        st = self.state_actions(state).state
        imgs, masks = self.images(images)
        tp = self.prompt_tokens(prompt, st)
        obs = Observation(
            images={k: torch.from_numpy(v)[None] for k, v in imgs.items()},
            image_masks={k: torch.tensor([m]) for k, m in masks.items()},
            tokens=torch.from_numpy(tp.tokens)[None],
            token_mask=torch.from_numpy(tp.mask)[None],
            state=torch.from_numpy(st.astype(np.float32))[None],
        )
        return obs.to(device)

    def actions(self, model_actions: np.ndarray | torch.Tensor, state: np.ndarray | torch.Tensor) -> np.ndarray:
        """Model output (normalized, padded: [H, 32] or [B, H, 32]) + the rig state it was computed from ([14] or
        [B, 14], rig units) -> rig actions [H, 14] / [B, H, 14] (absolute joints, ALOHA gripper units)."""
        a = model_actions.detach().float().cpu().numpy() if isinstance(model_actions, torch.Tensor) \
            else np.asarray(model_actions, dtype=np.float64)
        s = state.detach().double().cpu().numpy() if isinstance(state, torch.Tensor) else np.asarray(state, np.float64)
        self._check_dim(s, "state")
        if a.shape[-1] != self.config.action_dim:
            raise ValueError(f"model actions have {a.shape[-1]} dims, the model's action_dim is {self.config.action_dim}")
        model_state = self.vectors.forward(Vectors(s)).state
        return self.vectors.inverse(Vectors(model_state, a)).actions.astype(np.float32)

    def _check_dim(self, x: np.ndarray, what: str) -> None:
        if np.shape(x)[-1] != self.config.rig_dim:
            raise ValueError(f"{what} has {np.shape(x)[-1]} values per step; this policy was trained on "
                             f"{self.config.rig_dim} (rig joints)")

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """transforms.json + norm_stats.json (openpi layout) into the policy folder."""
        self.config.save(folder)
        save_norm_stats(Path(folder) / NORM_STATS_FILE, self.norm_stats)

    @classmethod
    def from_folder(cls, folder: str | Path, tokenizer: PromptTokenizer | None = None) -> "PolicyTransforms":
        folder = Path(folder)
        return cls(TransformConfig.load(folder), load_norm_stats(folder / NORM_STATS_FILE), tokenizer)
