"""pi0 inference latency, broken down like the paper's Table 1, and peak memory.

Full-size random-weight pi0 in bf16 on CUDA (default there), or a tiny variant on the CPU:
    python bench/bench_pi0.py                                  # CUDA: pi0, bf16, CUDA graphs, 1/2/3 cameras
    python bench/bench_pi0.py --mode compile+graph
    python bench/bench_pi0.py --device cpu --variant pi0_dummy
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

    print(f"pi0 bench: variant={variant} dtype={cfg.dtype} device={device}"
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


if __name__ == "__main__":
    main()
