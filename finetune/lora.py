"""LoRA for pi0 through `peft`, with openpi's ranks, and merging back into plain hub-layout weights.

openpi (JAX): rank 16 / alpha 16 on every Gemma 2B attention and MLP weight, rank 32 / alpha 32 on the action
expert's; the rest of both Gemma stacks (embedding, norms) frozen; the vision tower, the projector and the
state/action projections stay trainable. Our Linear layers are one per projection (q, k, v, o, gate, up, down),
the same granularity as openpi's einsums, so peft's per-`nn.Linear` adapters have openpi's semantics (a fused QKV
Linear would not). peft fits this model cleanly: it only wraps `nn.Linear` modules matched by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

VLM_LAYERS = r"paligemma_with_expert\.paligemma\.model\.language_model\.layers\.\d+"
EXPERT_LAYERS = r"paligemma_with_expert\.gemma_expert\.model\.layers\.\d+"
PROJECTIONS = r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
# frozen under LoRA: both Gemma stacks (openpi's ".*llm.*"), including the token embedding and norms
FROZEN_PREFIXES = ("paligemma_with_expert.paligemma.model.language_model.", "paligemma_with_expert.gemma_expert.",
                   "paligemma_with_expert.paligemma.lm_head.")


@dataclass(frozen=True)
class LoraSpec:
    vlm_rank: int = 16
    vlm_alpha: float = 16.0
    expert_rank: int = 32
    expert_alpha: float = 32.0
    dropout: float = 0.0


def apply_lora(model: nn.Module, spec: LoraSpec = LoraSpec()) -> nn.Module:
    """Injects adapters in place (peft) and sets requires_grad: adapters and the non-Gemma parts trainable,
    both Gemma stacks frozen. Adapter weights are fp32 whatever the base dtype (peft's autocast_adapter_dtype)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=spec.vlm_rank,
        lora_alpha=spec.vlm_alpha,
        lora_dropout=spec.dropout,
        target_modules=rf"^({VLM_LAYERS}|{EXPERT_LAYERS})\.{PROJECTIONS}$",
        rank_pattern={rf"^{EXPERT_LAYERS}\.{PROJECTIONS}$": spec.expert_rank},
        alpha_pattern={rf"^{EXPERT_LAYERS}\.{PROJECTIONS}$": spec.expert_alpha},
        bias="none",
    )
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            if p.dtype != torch.float32:
                p.data = p.data.float()
        else:
            p.requires_grad_(not name.startswith(FROZEN_PREFIXES))
    return model


def is_lora(model: nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_parameters())


def lora_ranks(model: nn.Module) -> dict[str, int]:
    """module name -> adapter rank (tests, and the run summary)."""
    from peft.tuners.lora import LoraLayer

    return {n: int(m.r["default"]) for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@dataclass(frozen=True)
class Adapter:
    """Where one adapted weight lives in a LoRA model's state_dict (peft's names), and its scaling alpha / r."""

    weight: str  # `...q_proj.base_layer.weight`
    lora_a: str  # `...q_proj.lora_A.default.weight` [r, in]
    lora_b: str  # `...q_proj.lora_B.default.weight` [out, r]
    scaling: float


def adapters(model: nn.Module) -> dict[str, Adapter]:
    """hub key of every adapted weight (`...q_proj.weight`) -> its Adapter; empty for a model without LoRA."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            if m.fan_in_fan_out or m.use_dora.get("default"):
                raise ValueError(f"{name}: only plain LoRA on nn.Linear is merged (fan_in_fan_out / DoRA is not)")
            out[f"{name}.weight"] = Adapter(f"{name}.base_layer.weight", f"{name}.lora_A.default.weight",
                                            f"{name}.lora_B.default.weight", float(m.scaling["default"]))
    return out


def merged_weight(weight: Tensor, lora_a: Tensor, lora_b: Tensor, scaling: float, dtype: torch.dtype) -> Tensor:
    """W + (B @ A) * scaling, computed in fp32 (a bf16 sum would round the small update away; the same operations
    as peft's merge), returned in `dtype`. Temporaries: one fp32 copy of this one weight (and the cast)."""
    delta = lora_b.float() @ lora_a.float()
    delta.mul_(scaling)
    delta.add_(weight)  # in fp32: a bf16 W is widened exactly
    return delta.to(dtype)


@torch.no_grad()
def merge_lora_(model: nn.Module) -> nn.Module:
    """Folds every adapter into its base weight (`merged_weight`, stored in the base dtype) and puts the plain
    Linear back, so the state_dict keys are the hub keys again. Works on the model in place (tests, small
    models); the policy export streams `merged_weight` per tensor instead (finetune.policy_export)."""
    from peft.tuners.lora import LoraLayer

    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, module in targets:
        base = module.get_base_layer()
        merged = merged_weight(base.weight, module.lora_A["default"].weight, module.lora_B["default"].weight,
                               float(module.scaling["default"]), base.weight.dtype)
        base.weight.copy_(merged)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
    return model


def frozen_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def base_name(lora_param_name: str) -> str:
    """`...q_proj.base_layer.weight` -> `...q_proj.weight` (the hub key of a wrapped weight)."""
    return re.sub(r"\.base_layer\.", ".", lora_param_name)


__all__ = ["Adapter", "LoraSpec", "adapters", "apply_lora", "base_name", "frozen_names", "is_lora", "lora_ranks",
           "merge_lora_", "merged_weight"]
