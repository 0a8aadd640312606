"""Precision policy, schedule and EMA: bf16 weights must not lose pi0-sized updates."""

from __future__ import annotations

import math

import pytest
import torch

from finetune.precision import (
    EMA, OptimConfig, autocast, build_optimizer, cosine_lr, round_to_bf16_stochastic_,
)

LR = 2.5e-5


def _regression(precision: str, steps: int = 200) -> tuple[float, float]:
    """A linear least-squares model with N(0, 1) weights trained at pi0's learning rate -> (loss before, after)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g)
    y = x @ torch.randn(16, 8, generator=g)
    w0 = torch.randn(16, 8, generator=g)
    store = torch.bfloat16 if precision in ("bf16-sr", "bf16-pure") else torch.float32
    w = torch.nn.Parameter(w0.clone().to(store))
    cfg = OptimConfig(peak_lr=LR, end_lr=LR, warmup_steps=0, decay_steps=10 ** 9)
    if precision == "bf16-pure":  # bf16 weights updated in place by torch's AdamW (round to nearest)
        opt = torch.optim.AdamW([w], lr=LR, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        opt = build_optimizer([w], cfg, precision, torch.device("cpu"))

    def loss() -> torch.Tensor:
        with autocast(precision, torch.device("cpu")):
            return ((x.to(w.dtype) @ w).float() - y).pow(2).mean()

    before = loss().item()
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    return before, loss().item()


def test_pure_bf16_stalls_and_our_policies_do_not():
    b0, b1 = _regression("bf16-pure")
    assert b1 == b0  # every update is below half a bf16 ulp: the weights never change
    for precision in ("bf16-amp", "bf16-sr", "fp32"):
        before, after = _regression(precision)
        # 200 AdamW steps of ~2.5e-5 move each weight by ~5e-3: a clear, measurable decrease
        assert after < before - 0.1, (precision, before, after)


def test_stochastic_rounding_is_unbiased_and_exact_on_representable_values():
    src = torch.full((200_000,), 1.0 + 2 ** -10)  # a quarter of the way between two bf16 values (ulp 2^-7)
    dst = torch.empty(src.shape, dtype=torch.bfloat16)
    round_to_bf16_stochastic_(dst, src, torch.Generator().manual_seed(0))
    vals = dst.float().unique().tolist()
    assert vals == [1.0, 1.0 + 2 ** -7]
    assert abs(dst.float().mean().item() - src[0].item()) < 2e-5  # nearest rounding would give exactly 1.0
    exact = torch.tensor([1.0, -2.5, 0.0, 3.0 + 2 ** -6])
    out = torch.empty(4, dtype=torch.bfloat16)
    round_to_bf16_stochastic_(out, exact, torch.Generator().manual_seed(1))
    assert torch.equal(out.float(), exact)


def test_cosine_schedule_matches_openpi_shape():
    cfg = OptimConfig(warmup_steps=1000, decay_steps=30_000)
    assert cosine_lr(0, cfg) == pytest.approx(2.5e-5 / 1001)  # ~0
    assert cosine_lr(500, cfg) == pytest.approx(2.5e-5 / 1001 + (2.5e-5 - 2.5e-5 / 1001) / 2)
    assert cosine_lr(1000, cfg) == pytest.approx(2.5e-5)
    mid = 1000 + 29_000 / 2
    assert cosine_lr(int(mid), cfg) == pytest.approx((2.5e-5 + 2.5e-6) / 2, rel=1e-3)
    assert cosine_lr(30_000, cfg) == pytest.approx(2.5e-6)
    assert cosine_lr(40_000, cfg) == pytest.approx(2.5e-6)
    lrs = [cosine_lr(s, cfg) for s in range(1000, 30_001, 500)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_default_hyperparameters_are_openpis():
    cfg = OptimConfig()
    assert (cfg.peak_lr, cfg.end_lr, cfg.warmup_steps, cfg.betas, cfg.eps, cfg.weight_decay, cfg.clip_norm) == (
        2.5e-5, 2.5e-6, 1000, (0.9, 0.95), 1e-8, 1e-10, 1.0)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(3))], cfg, "bf16-amp", torch.device("cpu"))
    g = opt.param_groups[0]
    assert (g["betas"], g["eps"], g["weight_decay"]) == ((0.9, 0.95), 1e-8, 1e-10)


def test_ema_tracks_in_fp32_and_swaps():
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    ema = EMA([("w", p)], decay=0.99)
    with torch.no_grad():
        p.fill_(1.0)
    for _ in range(10):
        ema.update()
    expected = 1 - 0.99 ** 10
    assert ema.shadow["w"].dtype == torch.float32
    assert ema.shadow["w"][0].item() == pytest.approx(expected, rel=1e-5)
    with ema.swapped_in():
        assert p[0].item() == pytest.approx(expected, rel=1e-2)
    assert p[0].item() == 1.0
    assert not math.isnan(ema.shadow["w"].sum().item())


@pytest.mark.parametrize("lora", [False, True])
def test_the_trainer_keeps_master_weights_fp32_only_for_what_trains(lora):
    """bf16-amp (finetune.train.build_policy): every trainable weight is an fp32 master weight; frozen ones (the
    Gemma stacks under LoRA, the weights the loss never reaches in a full fine-tune) stay in bf16 storage, except
    those pi0's mixed-precision policy keeps fp32 whatever (norms, vision patch/position embeddings)."""
    from finetune import presets
    from finetune.model.gemma import unused_in_training
    from finetune.model.pi0 import param_dtype
    from finetune.model_config import Pi0Config
    from finetune.train import TrainConfig, build_policy

    cfg = TrainConfig.from_preset(presets.preset("tiny").replace(lora=lora, precision="bf16-amp"),
                                  dataset="synthetic", out="unused")
    mc = Pi0Config.variant("pi0_tiny")
    policy = build_policy(cfg, None, mc, "bf16-amp", torch.device("cpu"))
    frozen = {n: p.dtype for n, p in policy.named_parameters() if not p.requires_grad}
    trainable = {n: p.dtype for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(d == torch.float32 for d in trainable.values())
    assert any(n.startswith(unused_in_training(mc)) for n in frozen)
    wrong = {n: d for n, d in frozen.items() if d != param_dtype(n, torch.bfloat16)}
    assert not wrong, sorted(wrong)[:5]
    assert sum(d == torch.bfloat16 for d in frozen.values()) >= (4 if not lora else 20)
