"""Training throughput and peak GPU memory: full fine-tuning and LoRA at batch 8 and 32, 3 cameras.

    python bench/bench_train.py                    # GPU: the full pi0 with random weights (no download); CPU: tiny
    python bench/bench_train.py --config tiny --batches 8 --steps 5

Each case builds the model the trainer builds (finetune.train.build_policy: precision policy, LoRA, gradient
checkpointing), then times optimizer steps (forward, backward, clip, AdamW) on one fixed random batch, so the
figure is the model's, not the data loader's (bench/bench_loader.py measures that). Prints the median step time,
samples/s and the peak GPU memory.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from finetune import presets  # noqa: E402
from finetune.model_config import Pi0Config  # noqa: E402
from finetune.model.pi0 import random_observation  # noqa: E402
from finetune.precision import OptimConfig, autocast, build_optimizer, set_lr  # noqa: E402
from finetune.train import LossModule, TrainConfig, build_policy, resolve_precision, step_noise  # noqa: E402


def bench_case(variant: str, lora: bool, batch: int, steps: int, warmup: int, device: torch.device,
               precision: str, grad_ckpt: bool, attention: str, compile_: bool) -> dict[str, float]:
    cfg = TrainConfig(dataset="synthetic", out="/tmp/unused", base="random", model=variant, lora=lora, steps=steps,
                      batch_size=batch, precision=precision, gradient_checkpointing=grad_ckpt, attention=attention,
                      compile=compile_, optim=OptimConfig(warmup_steps=0))
    prec = resolve_precision(precision, device)
    mc = Pi0Config.variant(variant).with_cameras(3)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    policy = build_policy(cfg, None, mc, prec, device)
    from finetune.model.gemma import unused_in_training

    for n, p in policy.named_parameters():
        if n.startswith(unused_in_training(policy.config)):
            p.requires_grad_(False)
    model = LossModule(policy)
    fwd = torch.compile(model) if compile_ else model
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.optim, prec, device)
    set_lr(opt, 2.5e-5)
    g = torch.Generator().manual_seed(0)
    obs = random_observation(policy.config, batch, generator=g).to(device)
    actions = torch.randn(batch, policy.config.action_horizon, policy.config.action_dim, generator=g).to(device)
    pad = torch.zeros(batch, policy.config.action_horizon, dtype=torch.bool, device=device)
    times = []
    for i in range(warmup + steps):
        noise, t = step_noise(0, i, 0, batch, 1, policy.config.action_horizon, policy.config.action_dim)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with autocast(prec, device):
            loss = fwd(obs, actions, pad, noise.to(device), t.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        else:
            loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out = {"step_s": med, "samples_per_s": batch / med,
           "trainable_M": sum(p.numel() for p in params) / 1e6,
           "peak_gb": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")}
    del policy, model, fwd, opt, params, obs, actions, loss
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", choices=("auto", "pi0", "tiny"), default="auto",
                    help="auto: the full pi0 on a GPU, the tiny model on the CPU")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case (median printed)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="auto (bf16-amp on CUDA, fp32 on CPU), bf16-amp, bf16-sr")
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--attention", default="sdpa", choices=("sdpa", "flex", "eager"))
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    config = a.config if a.config != "auto" else ("pi0" if device.type == "cuda" else "tiny")
    variant = presets.preset(config).model
    grad_ckpt = not a.no_grad_ckpt and config == "pi0"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"bench_train: {variant}, 3 cameras, {name}, precision {resolve_precision(a.precision, device)}, "
          f"gradient checkpointing {'on' if grad_ckpt else 'off'}, attention {a.attention}, "
          f"compile {'on' if a.compile else 'off'}, median of {a.steps} steps after {a.warmup} warm-up")
    print(f"{'mode':<6} {'batch':>5} {'trainable':>10} {'step s':>8} {'samples/s':>10} {'peak GB':>8}")
    for mode in a.modes.split(","):
        for b in (int(x) for x in a.batches.split(",")):
            try:
                r = bench_case(variant, mode == "lora", b, a.steps, a.warmup, device, a.precision, grad_ckpt,
                               a.attention, a.compile)
            except torch.OutOfMemoryError:
                print(f"{mode:<6} {b:>5} {'':>10} {'OOM':>8}")
                gc.collect()
                torch.cuda.empty_cache()
                continue
            print(f"{mode:<6} {b:>5} {r['trainable_M']:>9.1f}M {r['step_s']:>8.3f} {r['samples_per_s']:>10.1f} "
                  f"{r['peak_gb']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
