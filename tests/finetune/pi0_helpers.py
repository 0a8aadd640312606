"""Shared helpers for the pi0 tests (imported by test modules; not a test module itself)."""

from __future__ import annotations

import torch

from finetune.model_config import Pi0Config
from finetune.model.pi0 import Pi0, random_observation

PREFIX = "paligemma_with_expert."


def tiny_model(seed: int = 0, **changes) -> Pi0:
    cfg = Pi0Config.variant("pi0_tiny").replace(**changes)
    torch.manual_seed(seed)
    return Pi0(cfg).eval()


def tiny_obs(cfg: Pi0Config, batch: int = 2, seed: int = 1, prompt_len: int = 7):
    return random_observation(cfg, batch, generator=torch.Generator().manual_seed(seed), prompt_len=prompt_len)


def reference_hub_keys(cfg: Pi0Config, with_expert_lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    """The key -> shape layout of `lerobot/pi0_base`, written out from the reference notes (independently of the
    model's modules), for any dims. The tied embed_tokens is not stored, as on the hub."""
    v, p, e = cfg.vision, cfg.paligemma, cfg.expert
    keys: dict[str, tuple[int, ...]] = {}
    vm = PREFIX + "paligemma.model.vision_tower.vision_model."
    keys[vm + "embeddings.patch_embedding.weight"] = (v.width, 3, v.patch_size, v.patch_size)
    keys[vm + "embeddings.patch_embedding.bias"] = (v.width,)
    keys[vm + "embeddings.position_embedding.weight"] = (v.num_patches, v.width)
    for n in range(v.depth):
        lp = f"{vm}encoder.layers.{n}."
        for ln in ("layer_norm1", "layer_norm2"):
            keys[lp + ln + ".weight"] = (v.width,)
            keys[lp + ln + ".bias"] = (v.width,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[lp + f"self_attn.{proj}.weight"] = (v.width, v.width)
            keys[lp + f"self_attn.{proj}.bias"] = (v.width,)
        keys[lp + "mlp.fc1.weight"] = (v.mlp_dim, v.width)
        keys[lp + "mlp.fc1.bias"] = (v.mlp_dim,)
        keys[lp + "mlp.fc2.weight"] = (v.width, v.mlp_dim)
        keys[lp + "mlp.fc2.bias"] = (v.width,)
    keys[vm + "post_layernorm.weight"] = (v.width,)
    keys[vm + "post_layernorm.bias"] = (v.width,)
    keys[PREFIX + "paligemma.model.multi_modal_projector.linear.weight"] = (p.width, v.width)
    keys[PREFIX + "paligemma.model.multi_modal_projector.linear.bias"] = (p.width,)
    keys[PREFIX + "paligemma.lm_head.weight"] = (cfg.vocab_size, p.width)

    def gemma(prefix: str, g) -> None:
        for n in range(g.depth):
            lp = f"{prefix}layers.{n}."
            keys[lp + "self_attn.q_proj.weight"] = (g.num_heads * g.head_dim, g.width)
            keys[lp + "self_attn.k_proj.weight"] = (g.num_kv_heads * g.head_dim, g.width)
            keys[lp + "self_attn.v_proj.weight"] = (g.num_kv_heads * g.head_dim, g.width)
            keys[lp + "self_attn.o_proj.weight"] = (g.width, g.num_heads * g.head_dim)
            keys[lp + "mlp.gate_proj.weight"] = (g.mlp_dim, g.width)
            keys[lp + "mlp.up_proj.weight"] = (g.mlp_dim, g.width)
            keys[lp + "mlp.down_proj.weight"] = (g.width, g.mlp_dim)
            keys[lp + "input_layernorm.weight"] = (g.width,)
            keys[lp + "post_attention_layernorm.weight"] = (g.width,)
        keys[prefix + "norm.weight"] = (g.width,)

    gemma(PREFIX + "paligemma.model.language_model.", p)
    gemma(PREFIX + "gemma_expert.model.", e)
    if with_expert_lm_head:
        keys[PREFIX + "gemma_expert.lm_head.weight"] = (cfg.vocab_size, e.width)
    w = e.width
    for name, shape in (("state_proj", (w, cfg.state_dim)), ("action_in_proj", (w, cfg.action_dim)),
                        ("action_out_proj", (cfg.action_dim, w)), ("action_time_mlp_in", (w, 2 * w)),
                        ("action_time_mlp_out", (w, w))):
        keys[name + ".weight"] = shape
        keys[name + ".bias"] = (shape[0],)
    return keys


def numel(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for s in shapes.values():
        n = 1
        for d in s:
            n *= d
        total += n
    return total
