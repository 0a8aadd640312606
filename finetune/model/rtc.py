"""Real-time chunking (RTC) pieces that do not need the model: the soft prefix mask and the guidance weight.

Inference-time RTC (Black, Galliker, Levine 2025, arXiv 2506.07339) denoises the next chunk while the current one
executes, inpainting it towards the not-yet-executed actions of the current chunk with PiGDM-style guidance.
The paper's convention is tau: 0 = noise -> 1 = data, A_tau = tau*A + (1-tau)*eps, v = A - eps. Ours (the
ports') is t = 1 - tau: x_t = t*eps + (1-t)*A, v = eps - A, Euler steps with dt = -1/n. Translated:

    A_hat = x_t - t * v(x_t, t)                       (predicted clean chunk; the paper's A + (1-tau) v)
    g     = [W * (Y - A_hat)]^T dA_hat/dx_t           (vector-Jacobian product through the velocity network)
    x    <- x_t + dt * (v - w(t) * g)                 (the paper's A + (1/n)(v + w g), with v -> -v, 1/n -> -dt)
    w(t)  = min(beta, ((1-t)^2 + t^2) / (t (1-t)))    (the paper's (1-tau) / (tau r^2), r^2 = (1-tau)^2/(tau^2+(1-tau)^2))

The soft mask W (the paper's eq. 5, exponential schedule) over the H chunk steps, with d = inference delay and
k = prefix length (the overlap with the current chunk): 1 for i < d (these actions execute before the new chunk
arrives: frozen), c_i (e^c_i - 1) / (e - 1) with c_i = (k - i) / (k - d + 1) for d <= i < k, 0 for i >= k.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_MAX_GUIDANCE = 5.0


def check_prefix(horizon: int, delay: int, prefix_len: int) -> None:
    if not (0 <= prefix_len <= horizon):
        raise ValueError(f"RTC prefix length must be in [0, {horizon}] (the chunk horizon), got {prefix_len}")
    if not (0 <= delay <= prefix_len):
        raise ValueError(f"RTC delay must be in [0, prefix length {prefix_len}], got {delay}")


def prefix_weights(horizon: int, delay: int, prefix_len: int, device: torch.device | str = "cpu") -> Tensor:
    """The soft RTC mask W [H] fp32: 1 on the first `delay` steps, exponentially decaying over the rest of the
    prefix, 0 after it."""
    check_prefix(horizon, delay, prefix_len)
    i = torch.arange(horizon, dtype=torch.float64)
    c = (prefix_len - i) / (prefix_len - delay + 1)
    soft = c * torch.expm1(c) / math.expm1(1.0)
    w = torch.where(i < delay, torch.ones_like(i), torch.where(i < prefix_len, soft, torch.zeros_like(i)))
    return w.float().to(device)


def guidance_weight(t: float, max_guidance: float = DEFAULT_MAX_GUIDANCE) -> float:
    """The PiGDM guidance weight at flow time t (1 = noise, 0 = data), clipped at max_guidance (beta)."""
    if t >= 1.0 or t <= 0.0:
        return float(max_guidance)
    return float(min(max_guidance, ((1.0 - t) ** 2 + t ** 2) / (t * (1.0 - t))))


__all__ = ["DEFAULT_MAX_GUIDANCE", "check_prefix", "guidance_weight", "prefix_weights"]
