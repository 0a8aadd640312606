"""Optimizer, learning-rate schedule, EMA and the precision policy of post-training.

Why a policy at all: at pi0's learning rate (2.5e-5) an AdamW step moves a weight by ~lr, far below bf16's half
ulp for weights of typical size (2^-9 at 1.0), so bf16 weights updated in place never change ("stall"). Two
policies avoid it:

  * "bf16-amp" (default on CUDA): fp32 master weights, bf16 compute through autocast; 16 B per trainable param.
  * "bf16-sr": bf16 weights, fp32 Adam moments, the fp32 update written back with stochastic rounding (unbiased:
    the expected stored value equals the fp32 result); 12 B per trainable param, for cards that cannot hold fp32
    master weights.
  * "fp32": everything fp32 (the CPU and the tiny test models).
  * "bf16-pure": bf16 weights with torch's AdamW rounding to nearest. Only there to show the stall in a test.

openpi defaults: AdamW (0.9, 0.95), eps 1e-8, weight decay 1e-10, clip 1.0, cosine schedule warming up over 1000
steps to 2.5e-5 and decaying to 2.5e-6, EMA 0.99.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

import torch
from torch import Tensor, nn

Precision = Literal["fp32", "bf16-amp", "bf16-sr", "bf16-pure"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16-amp", "bf16-sr", "bf16-pure")


@dataclass(frozen=True)
class OptimConfig:
    peak_lr: float = 2.5e-5
    end_lr: float = 2.5e-6
    warmup_steps: int = 1000
    decay_steps: int = 30_000
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-10
    clip_norm: float = 1.0
    ema_decay: float | None = None  # openpi: 0.99 (JAX); None = no EMA


def cosine_lr(step: int, cfg: OptimConfig) -> float:
    """openpi's warmup-cosine: linear from peak/(warmup+1) (~0) at step 0 to peak at `warmup_steps`, then a
    cosine from peak down to end_lr at `decay_steps`, constant after. `step` counts updates already done."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        init = cfg.peak_lr / (cfg.warmup_steps + 1)
        return init + (cfg.peak_lr - init) * step / cfg.warmup_steps
    span = max(cfg.decay_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.end_lr + (cfg.peak_lr - cfg.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def model_dtype_for(precision: str) -> str:
    """The dtype the trainable weights are stored in under a policy (Pi0Config.dtype)."""
    return "float32" if precision in ("fp32", "bf16-amp") else "bfloat16"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 compute over fp32 weights for "bf16-amp"; nothing otherwise (bf16 weights compute in bf16)."""
    if precision == "bf16-amp":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, precision: str,
                    device: torch.device, seed: int = 0) -> torch.optim.Optimizer:
    """AdamW with openpi's hyper-parameters; fused on CUDA; stochastic rounding for "bf16-sr"."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    if precision == "bf16-sr":
        return StochasticRoundingAdamW(params, lr=cfg.peak_lr, betas=cfg.betas, eps=cfg.eps,
                                       weight_decay=cfg.weight_decay, seed=seed)
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.peak_lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def round_to_bf16_stochastic_(dst: Tensor, src: Tensor, generator: torch.Generator | None) -> None:
    """dst (bf16) <- src (fp32) rounded stochastically: add a uniform random 16-bit integer to the fp32 bit
    pattern, then drop the low 16 bits (truncation). P(round up) = the dropped fraction, so E[dst] = src."""
    bits = src.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
    rounded = (bits + noise) & -65536  # 0xFFFF0000 as a signed int32
    dst.copy_(rounded.view(torch.float32))  # exact: the low 16 bits are zero


class StochasticRoundingAdamW(torch.optim.Optimizer):
    """AdamW for bf16 weights: moments in fp32, the step computed in fp32 from the bf16 weight, the result
    stored back with stochastic rounding. Its rounding noise comes from its own seeded generator, saved in the
    state dict, so a resumed run rounds exactly as an uninterrupted one would."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 2.5e-5, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 1e-10, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _gen(self, device: torch.device) -> torch.Generator:
        g = self._generators.get(device)
        if g is None:
            g = self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return g

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                t = float(st["step"])
                g = p.grad.float()
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(eps)
                w = p.float()
                w.mul_(1 - lr * wd).addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1 ** t))
                if p.dtype == torch.bfloat16:
                    round_to_bf16_stochastic_(p, w, self._gen(p.device))
                else:
                    p.copy_(w)
        return loss

    def state_dict(self) -> dict:  # type: ignore[override]
        sd = super().state_dict()
        sd["rounding_rng"] = {str(d): g.get_state() for d, g in self._generators.items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        state_dict = dict(state_dict)
        rng = state_dict.pop("rounding_rng", {})
        super().load_state_dict(state_dict)
        for dev, s in rng.items():
            self._gen(torch.device(dev)).set_state(s)


class EMA:
    """Exponential moving average of the trainable weights, kept in fp32 (a bf16 average would stall exactly like
    bf16 weights). ema <- decay * ema + (1 - decay) * w after every update."""

    def __init__(self, named_params: Iterable[tuple[str, nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.params = {n: p for n, p in named_params if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.params)
        torch._foreach_lerp_([self.shadow[n] for n in names], [self.params[n].detach().float() for n in names],
                             1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for n, t in sd.items():
            if n in self.shadow:
                self.shadow[n].copy_(t)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily puts the averaged weights into the model (validation, export)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])


def bytes_per_trainable_param(precision: str) -> int:
    """Weights + grads + Adam moments, per trainable parameter (activations not included)."""
    return {"fp32": 16, "bf16-amp": 16, "bf16-sr": 12, "bf16-pure": 8}[precision]


__all__ = [
    "EMA", "OptimConfig", "PRECISIONS", "Precision", "StochasticRoundingAdamW", "autocast", "build_optimizer",
    "bytes_per_trainable_param", "cosine_lr", "model_dtype_for", "round_to_bf16_stochastic_", "set_lr",
]
