"""pi0.5: pi0's network with the flow time conditioning the action expert's norms instead of its input.

What differs from pi0 (finetune/model/pi0.py, whose prefix, samplers, RTC paths and loss this reuses):
  * no state token: the state reaches the model through the prompt (finetune.transforms.prompt discretizes it);
    the suffix is the 50 action tokens alone, ar mask [1, 0 x 49];
  * the time: sinusoid -> `time_mlp_in` -> SiLU -> `time_mlp_out` -> SiLU = the condition of every adaptive
    RMSNorm of the expert (finetune.model.gemma.AdaRMSNorm: scale, shift, residual gate);
  * the action tokens are `action_in_proj(x_t)` alone (no action-time MLP).
Module names follow `lerobot/pi05_base`'s keys (`time_mlp_in`, `...input_layernorm.dense`, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.model_config import Pi0Config
from finetune.model.gemma import AdaRMSNorm, PaliGemmaWithExpert
from finetune.model.pi0 import Pi0


class Pi05(Pi0):
    def __init__(self, config: Pi0Config) -> None:
        if not config.pi05:
            raise ValueError(f"Pi05 needs a pi0.5 config (pi05=True); {config.name!r} is pi0: use Pi0")
        nn.Module.__init__(self)  # not Pi0.__init__: pi0's state_proj and action-time MLP do not exist here
        self.config = config
        self.paligemma_with_expert = PaliGemmaWithExpert(config)
        w = config.expert.width
        self.action_in_proj = nn.Linear(config.action_dim, w)
        self.time_mlp_in = nn.Linear(w, w)
        self.time_mlp_out = nn.Linear(w, w)
        self.action_out_proj = nn.Linear(w, config.action_dim)
        for m in self.modules():  # openpi initializes the modulation to zero: the expert starts as the identity
            if isinstance(m, AdaRMSNorm):
                nn.init.zeros_(m.dense.weight), nn.init.zeros_(m.dense.bias)

    def embed_state(self, state: Tensor) -> None:
        """No state token (the state is in the prompt, or nowhere with discrete_state_input=False)."""
        return None

    def time_condition(self, time_emb: Tensor) -> Tensor:
        """Sinusoid [B, W] or [B, H, W] -> the adaptive norms' condition (same shape)."""
        dtype = self.time_mlp_in.weight.dtype
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb.to(dtype)))))

    def suffix_inputs(self, state_emb: Tensor | None, x_t: Tensor, time_emb: Tensor) -> tuple[Tensor, Tensor]:
        return self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype)), self.time_condition(time_emb)

    def embed_suffix(self, state_emb: Tensor | None, x_t: Tensor, time_emb: Tensor) -> Tensor:
        return self.suffix_inputs(state_emb, x_t, time_emb)[0]

    def suffix_ar(self, device: torch.device) -> Tensor:
        ar = torch.zeros(self.config.suffix_len, dtype=torch.long, device=device)
        ar[0] = 1  # the action tokens are one block after the prefix
        return ar


def model_class(config: Pi0Config) -> type[Pi0]:
    """The network a config builds: Pi05 for pi0.5 configs, Pi0 otherwise."""
    return Pi05 if config.pi05 else Pi0


__all__ = ["Pi05", "model_class"]
