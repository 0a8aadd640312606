"""The policy export without a second model: the training model's tensors, one at a time, into the policy
folder's model.safetensors (a `finetune.checkpoint.WeightStream`, written by the streaming safetensors writer).

Per hub key, in the writer's (sorted) order:
  * the EMA shadow in place of a trained weight (runs with EMA; a tied weight is found under either of its names);
  * under FSDP the full tensor, gathered from its shards (`full_tensor()`, a collective: every rank walks the same
    tensors in the same order, only rank 0 writes);
  * LoRA folded in (`finetune.lora.merged_weight`: W + (B @ A) * alpha/r in fp32, for this one weight);
  * cast to the policy dtype (`finetune.checkpoint.inference_dtype`: bf16 for pi0 whatever the base's config.json
    says, as openpi exports; norms and the vision patch/position embeddings stay fp32, `param_dtype`).
The key layout is `save_pi0`'s: the tied embed_tokens alias left out, peft's names mapped back to the hub keys.

Why: merging into a second model (built in the base's fp32) took a 3.3 B LoRA run that trained at ~15.6 GB to
22-23 GB and the OOM killer. Here the export adds about one weight in fp32 (bench/bench_export.py has figures).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping

import torch
from torch import Tensor

from finetune.checkpoint import TIED_ALIAS, WeightStream, torch_dtype
from finetune.lora import Adapter, adapters, base_name, merged_weight
from finetune.model.pi0 import Pi0, param_dtype


class TrainingWeights:
    """The policy weights of a training model (plain, DDP-wrapped inside or FSDP2-sharded), merged and cast on
    demand. Collective under FSDP: every rank makes one, rank 0 lets the writer call `produce`, the others call
    `walk()`; a rank 0 whose write failed calls `walk_rest()` so the other ranks' gathers complete."""

    def __init__(self, policy: Pi0, shadow: Mapping[str, Tensor] | None, dtype: str,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        self.config = policy.config.replace(dtype=dtype)
        self._shadow = shadow
        self._on_progress = on_progress
        self._state = policy.state_dict()
        # every name of each parameter: the EMA keys a tied weight by the name named_parameters() gives it
        names: dict[int, list[str]] = defaultdict(list)
        for n, p in policy.named_parameters(remove_duplicate=False):
            names[id(p)].append(n)
        self._aliases = {n: ns for ns in names.values() for n in ns}
        lora = adapters(policy)
        lora_tensors = {k for a in lora.values() for k in (a.lora_a, a.lora_b)}
        by_weight = {a.weight: a for a in lora.values()}
        compute = torch_dtype(dtype)
        self.sources: dict[str, str | Adapter] = {}
        self.specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for key, t in self._state.items():
            if key == TIED_ALIAS or key in lora_tensors:
                continue
            if "lora_" in key:
                raise ValueError(f"{key}: an adapter tensor the export does not know how to merge")
            hub = base_name(key)
            self.sources[hub] = by_weight.get(key, key)
            self.specs[hub] = (tuple(t.shape), param_dtype(hub, compute) if t.is_floating_point() else t.dtype)
        self.collective = any(hasattr(t, "full_tensor") for t in self._state.values())
        self.order = [k for hub in sorted(self.specs) for k in self._inputs(hub)]  # every gather, in order
        self.nbytes = sum(torch.Size(s).numel() * torch.empty((), dtype=d).element_size()
                          for s, d in self.specs.values())
        self._gathered = 0
        self._written = 0

    def _inputs(self, hub: str) -> list[str]:
        src = self.sources[hub]
        return [src.weight, src.lora_a, src.lora_b] if isinstance(src, Adapter) else [src]

    def _full(self, key: str) -> Tensor:
        """The state_dict tensor `key` (its EMA average where there is one), whole and detached."""
        t = self._state[key]
        if self._shadow is not None:
            name = next((n for n in self._aliases.get(key, [key]) if n in self._shadow), None)
            if name is not None:
                t = self._shadow[name]
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        self._gathered += 1
        return t.detach()

    @torch.no_grad()
    def produce(self, hub: str) -> Tensor:
        shape, dtype = self.specs[hub]
        src = self.sources[hub]
        if isinstance(src, Adapter):
            w, a, b = (self._full(k) for k in (src.weight, src.lora_a, src.lora_b))
            out = merged_weight(w, a, b, src.scaling, dtype)
            del w, a, b
        else:
            out = self._full(src).to(dtype)
        self._written += torch.Size(shape).numel() * out.element_size()
        if self._on_progress is not None:
            self._on_progress(self._written, self.nbytes)
        return out

    def stream(self) -> WeightStream:
        return WeightStream(self.config, self.specs, self.produce)

    @torch.no_grad()
    def walk(self) -> None:
        """A rank that writes nothing: take part in every gather (FSDP), nothing to do otherwise."""
        if self.collective:
            for hub in sorted(self.specs):
                self.produce(hub)

    @torch.no_grad()
    def walk_rest(self) -> None:
        """After a failed write on rank 0: the gathers the writer did not reach (FSDP), so no rank hangs."""
        if self.collective:
            for key in self.order[self._gathered:]:
                self._full(key)


__all__ = ["TrainingWeights"]
