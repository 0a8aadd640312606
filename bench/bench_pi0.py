"""pi0 / pi0.5 inference latency, broken down like the paper's Table 1, and peak memory.

Full-size random-weight pi0 in bf16 on CUDA (default there), or a tiny variant on the CPU:
    python bench/bench_pi0.py                                  # CUDA: pi0, bf16, CUDA graphs, 1/2/3 cameras
    python bench/bench_pi0.py --mode compile+graph
    python bench/bench_pi0.py --device cpu --variant pi0_dummy
    python bench/bench_pi0.py --variant pi05                   # pi0.5 (any variant of finetune.model_config)
Full-size on the CPU (bf16 per chunk, then one LoRA training step; ~8 / ~16 GB: run it alone):
    flock /tmp/fullsize.lock python bench/bench_pi0.py --device cpu --variant pi05 --dtype bfloat16 \
        --cameras 3 --iters 1 --warmup 0 --lora-step
Stages: image encoders (SigLIP + projector, all cameras), observation prefix (Gemma 2B over images + prompt,
filling the K/V cache), 10 action-expert passes (suffix only, against the cache); total is timed separately
as the three stages back to back. Prints medians (and p90) in ms; peak memory is torch.cuda.max_memory_allocated
on CUDA, the process' peak RSS on the CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.checkpoint import build_model, random_init_  # noqa: E402
from finetune.model_config import Pi0Config  # noqa: E402
from finetune.model.fast import MODES, StaticSampler  # noqa: E402
from finetune.model.pi0 import count_parameters  # noqa: E402


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:  # type: ignore[no-untyped-def]
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn()
        return (time.perf_counter() - t0) * 1e3


def summarize(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p90": xs[min(len(xs) - 1, int(0.9 * len(xs)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variant", default=None, help="pi0 (default on CUDA) or pi0_dummy (default on the CPU)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                    help="default: bfloat16 on CUDA, the variant's own on the CPU")
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--mode", default=None, choices=MODES, help="default: graph on CUDA, eager on the CPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per camera count")
    ap.add_argument("--lora-step", action="store_true",
                    help="then time LoRA training steps (bf16 frozen base, fp32 adapters, bf16 autocast, gradient "
                         "checkpointing: the trainer's LoRA set-up) at --batch, with the largest camera count")
    ap.add_argument("--lora-steps", type=int, default=2, help="LoRA steps to time (the first includes warm-up)")
    args = ap.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = args.variant or ("pi0" if cuda else "pi0_dummy")
    mode = args.mode or ("graph" if cuda else "eager")
    iters = args.iters or (50 if cuda else 10)
    cfg = Pi0Config.variant(variant)
    cfg = cfg.replace(dtype=args.dtype or ("bfloat16" if cuda else cfg.dtype))
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    print(f"{'pi0.5' if cfg.pi05 else 'pi0'} bench: variant={variant} dtype={cfg.dtype} device={device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''} mode={mode} steps={args.steps} "
          f"batch={args.batch} torch={torch.__version__} threads={torch.get_num_threads()}")
    t0 = time.perf_counter()
    model = random_init_(build_model(cfg.with_cameras(max(args.cameras)), "meta"), device).eval()
    print(f"built {count_parameters(model):,} params (random weights) in {time.perf_counter() - t0:.1f} s")

    print(f"{'cams':>4} {'prefix':>6} | {'images':>14} {'prefix fwd':>14} {'10 expert':>14} {'total':>14} | peak")
    for n in args.cameras:
        model.config = cfg.with_cameras(n)  # camera slots change no weight; only the prefix length
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        sampler = StaticSampler(model, batch_size=args.batch, num_steps=args.steps, mode=mode,
                                warmup=args.warmup)
        timer = Timer(device)
        stages: dict[str, list[float]] = {"images": [], "prefix": [], "denoise": [], "total": []}
        for _ in range(iters):
            stages["images"].append(timer(sampler.run_images))
            stages["prefix"].append(timer(sampler.run_prefill))
            stages["denoise"].append(timer(sampler.run_denoise))
            stages["total"].append(timer(sampler.run_all))
        res = {k: summarize(v) for k, v in stages.items()}
        if cuda:
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            peak_s = f"{peak:.2f} GiB GPU"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            peak_s = f"{peak:.2f} GiB RSS"
        cell = lambda k: f"{res[k]['median']:7.2f} ({res[k]['p90']:5.1f})"  # noqa: E731
        print(f"{n:>4} {model.config.prefix_len:>6} | {cell('images')} {cell('prefix')} {cell('denoise')} "
              f"{cell('total')} | {peak_s}")
        if args.json:
            print(json.dumps({"variant": variant, "dtype": cfg.dtype, "device": str(device), "mode": mode,
                              "cameras": n, "ms": res, "peak_gib": peak}))
        del sampler
    print("ms: median (p90) over", iters, "iterations")
    if args.lora_step:
        del model
        lora_step(cfg.with_cameras(max(args.cameras)), device, args.batch, args.lora_steps)


def lora_step(cfg: Pi0Config, device: torch.device, batch: int, steps: int) -> None:
    """LoRA training steps as finetune.train.build_policy sets them up (frozen base in bf16, adapters and the
    trainable projections in fp32, bf16 autocast, gradient checkpointing, AdamW), random weights and batch."""
    from finetune.lora import apply_lora
    from finetune.model.gemma import unused_in_training
    from finetune.model.pi0 import random_observation
    from finetune.precision import OptimConfig, autocast, build_optimizer

    t0 = time.perf_counter()
    model = random_init_(build_model(cfg.replace(dtype="bfloat16"), "meta"), device)
    model.set_gradient_checkpointing(True)
    apply_lora(model)
    for name, p in model.named_parameters():
        if name.startswith(unused_in_training(cfg)):
            p.requires_grad_(False)
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, OptimConfig(), "bf16-amp", device)
    print(f"LoRA: {sum(p.numel() for p in params):,} trainable params, built in {time.perf_counter() - t0:.1f} s")
    g = torch.Generator().manual_seed(0)
    obs = random_observation(cfg, batch, generator=g).to(device)
    actions = torch.randn(batch, cfg.action_horizon, cfg.action_dim, generator=g).to(device)
    model.train()
    for i in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with autocast("bf16-amp", device):
            loss = model.compute_loss(obs, actions)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU"
        else:
            peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (process peak)"
        print(f"LoRA step {i + 1}/{steps} (batch {batch}, {cfg.num_cameras} cameras): "
              f"{time.perf_counter() - t0:.2f} s, loss {loss.item():.3f}, peak {peak}")


if __name__ == "__main__":
    main()
