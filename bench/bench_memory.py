"""Peak memory of a pi0 training step, split into a fixed part and a per-sample part: the data behind
finetune/memory_model.py.

    python bench/bench_memory.py                      # the whole grid (~1 h on 2 cores), then the fit and the table
    python bench/bench_memory.py --only lora-L2 --batches 1   # one case
    python bench/bench_memory.py --report             # no measuring: fit + table from bench/memory_points.json

Each case runs in its own child process: the model exactly as the trainer builds it (finetune.train.build_policy,
random weights, finetune.precision's optimizer, gradient checkpointing as asked), 3 cameras, one fixed random batch,
two optimizer steps (the second one is measured: the Adam moments exist from the first step on, as in every later
step of a run). The child resets its peak RSS (VmHWM, through /proc/self/clear_refs) before the second
forward+backward and again before the optimizer step (gradient clipping + AdamW), so the two phases' peaks are
separate figures; it also counts the tensor bytes of the parameters, the gradients and the optimizer state.

The full-size model does not fit a full fine-tune in 24 GB, so the grid measures depth-reduced variants at full
width: Gemma 2B + the 300M expert with L = 2, 4, 6 layers and SigLIP So400m with 1.5 L layers (27/18: the full
model is the L = 18 member of the family), plus SigLIP-less points that separate the two towers' terms. Full
fine-tuning is measured with a 32,768-token vocabulary instead of 257,152 (the embedding's 527 M parameters would
need 12.6 GB of stochastic-rounding temporaries alone); the embedding only adds parameter, gradient, Adam and
optimizer-temporary bytes, which the model counts exactly. The fit (least squares) is printed for
finetune/memory_model.py; the full-size LoRA points (batch 1, 2) validate it and run under
`flock /tmp/fullsize.lock` only when `free -g` shows enough memory available (skipped and said otherwise).

All figures are CPU figures (peak RSS): activations on CUDA differ (no cuDNN workspaces here, other SDPA kernels);
finetune/memory_model.py says what it assumes for a CUDA card.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POINTS = ROOT / "bench" / "memory_points.json"
LOCK = "/tmp/fullsize.lock"
GIB = 2 ** 30
FULL_VOCAB = 257_152
SMALL_VOCAB = 32_768  # full fine-tuning points (see the module docstring)


@dataclass(frozen=True)
class Case:
    """One measured point: a pi0 variant at full width with `gemma_depth` / `siglip_depth` layers."""

    mode: str  # "lora" | "full"
    precision: str  # finetune.precision policy
    gemma_depth: int
    siglip_depth: int
    vocab: int
    batch: int
    grad_ckpt: bool = True

    @property
    def name(self) -> str:
        full = self.gemma_depth == 18 and self.siglip_depth == 27 and self.vocab == FULL_VOCAB
        shape = "fullsize" if full else f"L{self.gemma_depth}S{self.siglip_depth}" + (
            "" if self.vocab == FULL_VOCAB else f"V{self.vocab // 1024}k")
        return f"{self.mode}-{self.precision}-{shape}-b{self.batch}" + ("" if self.grad_ckpt else "-nockpt")

    @property
    def fullsize(self) -> bool:
        return self.gemma_depth == 18 and self.siglip_depth == 27


def model_config(case: Case):  # -> finetune.model_config.Pi0Config
    from finetune.model_config import Pi0Config

    base = Pi0Config.variant("pi0").with_cameras(3)
    return base.replace(
        paligemma=dataclasses.replace(base.paligemma, depth=case.gemma_depth),
        expert=dataclasses.replace(base.expert, depth=case.gemma_depth),
        vision=dataclasses.replace(base.vision, depth=case.siglip_depth),
        vocab_size=case.vocab)


def grid(batches: tuple[int, ...]) -> list[Case]:
    cases: list[Case] = []
    for depth in (2, 4, 6):
        cases += [Case("lora", "bf16-amp", depth, depth * 3 // 2, FULL_VOCAB, b) for b in batches]
    cases += [Case("lora", "bf16-amp", 4, 0, FULL_VOCAB, b) for b in batches]
    for depth in (2, 4, 6):
        cases += [Case("full", "bf16-sr", depth, depth * 3 // 2, SMALL_VOCAB, b) for b in batches]
    cases += [Case("full", "bf16-sr", 4, 0, SMALL_VOCAB, b) for b in batches]
    cases += [Case("full", "bf16-sr", 2, 3, 2 * SMALL_VOCAB, 1)]  # a larger largest tensor: the update's temporaries
    for depth in (2, 4):
        cases += [Case("lora", "bf16-amp", depth, depth * 3 // 2, FULL_VOCAB, b, grad_ckpt=False)
                  for b in batches if b <= 2]
    cases += [Case("lora", "fp32", 2, 3, FULL_VOCAB, b) for b in batches if b <= 2]
    # larger batches at the smallest depth: where activations, not the gradients, set the peak
    cases += [Case(m, p, 2, 3, v, b) for b in (8, 16) for m, p, v in (("lora", "bf16-amp", FULL_VOCAB),
                                                                     ("full", "bf16-sr", SMALL_VOCAB))]
    cases += [Case("lora", "bf16-amp", 18, 27, FULL_VOCAB, b) for b in (1, 2)]
    return cases


def validation_only(case: Case) -> bool:
    """Points that check the fit instead of entering it: the full-size model (the extrapolation in depth) and fp32
    (the x2 activation assumption)."""
    return case.fullsize or case.precision == "fp32"


# ====================================================================================================== the child
def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    """VmHWM := current RSS (Linux clear_refs "5"), so the next VmHWM is the next phase's own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def _allocated_peak(run) -> int:
    """Peak of the bytes torch's CPU allocator hands out while `run()` runs, over what was allocated before (the
    profiler's memory events: the CPU's counterpart of torch.cuda.max_memory_allocated, without the C heap's
    own retention and fragmentation that RSS also sees)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as d:
        prof.export_chrome_trace(f"{d}/trace.json")
        events = json.loads(Path(f"{d}/trace.json").read_text())["traceEvents"]
    mem = [e["args"] for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    if not mem:
        return 0
    # the counter runs on from an earlier profiled window (the gradients it saw allocated): start from zero here
    start = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(0, *(m["Total Allocated"] - start for m in mem))


def child(case: Case) -> dict:
    import torch

    from finetune.model.pi0 import random_observation
    from finetune.precision import OptimConfig, autocast, build_optimizer, set_lr
    from finetune.train import LossModule, TrainConfig, build_policy, step_noise

    base_rss = _status_bytes("VmRSS")
    device = torch.device("cpu")
    cfg = TrainConfig(dataset="synthetic", out="/tmp/unused", base="random", model="pi0", lora=case.mode == "lora",
                      steps=2, batch_size=case.batch, precision=case.precision, gradient_checkpointing=case.grad_ckpt,
                      optim=OptimConfig(warmup_steps=0))
    t0 = time.perf_counter()
    policy = build_policy(cfg, None, model_config(case), case.precision, device)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.optim, case.precision, device)
    set_lr(opt, 2.5e-5)
    model = LossModule(policy)
    g = torch.Generator().manual_seed(0)
    obs = random_observation(policy.config, case.batch, generator=g)
    actions = torch.randn(case.batch, policy.config.action_horizon, policy.config.action_dim, generator=g)
    pad = torch.zeros(case.batch, policy.config.action_horizon, dtype=torch.bool)
    built_s = time.perf_counter() - t0
    out: dict = {}
    step_s = []
    for i in range(2):  # step 1 creates the Adam moments; step 2: peak RSS (VmHWM) per phase
        noise, t = step_noise(0, i, 0, case.batch, 1, policy.config.action_horizon, policy.config.action_dim)
        t1 = time.perf_counter()
        if i == 1:
            _reset_peak()
            out["steady_rss"] = _status_bytes("VmRSS")
        with autocast(case.precision, device):
            loss = model(obs, actions, pad, noise, t)
        loss.backward()
        if i == 1:
            out["fwd_bwd_peak"] = _status_bytes("VmHWM")
            out["grads"] = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
            _reset_peak()
            out["after_bwd_rss"] = _status_bytes("VmRSS")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i == 1:
            out["opt_peak"] = _status_bytes("VmHWM")
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t1)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss.item()}")
    # step 3 under the profiler: the allocator's peak per phase, above what lives before it (weights, moments,
    # the batch; then + the gradients), the figure a CUDA card's caching allocator would serve
    noise, t = step_noise(0, 2, 0, case.batch, 1, policy.config.action_horizon, policy.config.action_dim)

    def fwd_bwd() -> None:
        with autocast(case.precision, device):
            model(obs, actions, pad, noise, t).backward()

    def update() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    out["fwd_bwd_alloc"] = _allocated_peak(fwd_bwd)
    out["opt_alloc"] = _allocated_peak(update)
    out["alloc_offset_fixed"] = True  # opt_alloc excludes the gradients (counted apart)
    opt.zero_grad(set_to_none=True)
    seen: set[int] = set()
    weights = 0
    for p in policy.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            weights += p.numel() * p.element_size()
    optim_state = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                      if torch.is_tensor(v))
    out.update(case=dataclasses.asdict(case), name=case.name, base_rss=base_rss, weights=weights,
               optimizer=optim_state, trainable=sum(p.numel() for p in params),
               trainable_bytes=sum(p.numel() * p.element_size() for p in params),
               largest_trainable=max(p.numel() for p in params),
               total=sum(p.numel() for p in policy.parameters()), build_s=built_s, step_s=step_s,
               threads=torch.get_num_threads(), torch=torch.__version__)
    out["peak"] = max(out["fwd_bwd_peak"], out["opt_peak"])
    inputs = sum(x.numel() * x.element_size() for x in (*obs.images.values(), obs.tokens, obs.state, actions))
    out["inputs"] = inputs
    tensors = out["weights"] + out["optimizer"] + inputs
    out["alloc_peak"] = max(tensors + out["fwd_bwd_alloc"], tensors + out["grads"] + out["opt_alloc"])
    return out


# ====================================================================================================== the parent
def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def needed(case: Case) -> int:
    """What a case needs available before it starts: its tensors (counted exactly), the stochastic-rounding
    temporaries, a generous 1.5 GB + 0.4 GB per sample for the rest, 2 GB for everyone else on the machine; a
    full-size point at least 19 GB (the task's rule)."""
    from finetune.memory_model import parameters

    ts = parameters(model_config(case), case.mode == "lora", case.precision)
    train = [t for t in ts if t.trainable]
    tensors = sum(t.nbytes for t in ts) + sum(t.nbytes for t in train) + sum(8 * t.numel for t in train)
    sr = 24 * max(t.numel for t in train) if case.precision == "bf16-sr" else 0
    return max(tensors + sr + int((3.5 + 0.4 * case.batch) * GIB), 19 * GIB if case.fullsize else 0)


def run_case(case: Case, timeout_s: float) -> dict | None:
    need = needed(case)
    if mem_available() < need:
        print(f"  skipped {case.name}: needs ~{need / GIB:.1f} GB available, the machine has "
              f"{mem_available() / GIB:.1f} GB now", flush=True)
        return None
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(dataclasses.asdict(case))]
    if case.fullsize or need > 12 * GIB:  # one big process at a time on the shared machine
        cmd = ["flock", LOCK, *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
    if r.returncode != 0:
        print(f"  {case.name} failed ({r.returncode}): {r.stderr.strip().splitlines()[-3:]}", flush=True)
        return None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.monotonic() - t0
    return res


def load_points(path: Path = POINTS) -> list[dict]:
    points = json.loads(path.read_text())["points"] if path.is_file() else []
    for p in points:  # measured before the profiler's running counter was re-based: it included the gradients
        if "opt_alloc" in p and not p.get("alloc_offset_fixed"):
            p["opt_alloc"] -= p["grads"]
            p["alloc_offset_fixed"] = True
    return points


def save_points(points: list[dict], path: Path = POINTS) -> None:
    path.write_text(json.dumps({"about": "measured by bench/bench_memory.py (CPU peak RSS); see bench/README.md",
                                "points": points}, indent=1) + "\n")


def case_of(point: dict) -> Case:
    return Case(**point["case"])


# ====================================================================================================== the fit
def fit(points: list[dict]) -> dict[str, dict[str, float]]:
    """Per family ((lora | full) x (ckpt | nockpt), bf16 compute), twice: on the peak RSS (the CPU estimate) and on
    the allocator's peak (keys "alloc_...": the card estimate). Coefficients in bytes; L = Gemma/expert layers,
    S = SigLIP layers, B = batch; W, G, O = weights, gradients, optimizer state (counted).

    The forward+backward peak is the larger of two moments, fitted as the upper envelope of two lines (each
    point belongs to the one that predicts it higher; non-negative least squares, re-assigned until stable):
        end of the backward pass (every gradient):  W + O + G + grad_fixed + L * grad_fixed_gemma_layer
                                                                             + S * grad_fixed_siglip_layer
        the backward pass's activations:            W + O + act_fixed + B * (per_sample + L * gemma_b + S * siglip_b)
    gemma_b / siglip_b: with checkpointing each layer's kept input, counted (finetune.memory_model.boundary_bytes:
    fitted from 2-6 layers it would be noise that 18 and 27 layers multiply); without, fitted
    (per_sample_gemma_layer / per_sample_siglip_layer). The optimizer step:
        W + O + G + opt_fixed + opt_slope * x + opt_per_trainable_byte * (trainable bytes)
    x: the bytes of one Adam moment (foreach AdamW copies sqrt(v)) or the fp32 bytes of the largest trainable
    tensor (the stochastic-rounding AdamW works tensor by tensor: copies of its gradient, weight, update and
    rounding noise); the trainable-bytes term only where it is not proportional to x; where x does not vary the
    slope is the code's (1, or 6 for stochastic rounding). Where S = 1.5 L at every point, layer terms are split
    between the towers: fixed ones by layer parameters, per-sample ones by token x width units.
    `validation_only` points are not fitted: they check the model."""
    out: dict[str, dict[str, float]] = {}
    for fam in sorted({family(p) for p in points}):
        pts = [p for p in points if family(p) == fam and not validation_only(case_of(p))]
        if not pts:
            continue
        res = _fit(pts, [p["fwd_bwd_peak"] for p in pts], [p["opt_peak"] for p in pts])
        alloc = _fit(pts, [p["weights"] + p["optimizer"] + p["inputs"] + p["fwd_bwd_alloc"] for p in pts],
                     [p["weights"] + p["optimizer"] + p["grads"] + p["opt_alloc"] for p in pts])
        res.update({f"alloc_{k}": v for k, v in alloc.items() if k != "points"})
        res["base_rss"] = float(sum(p["base_rss"] for p in pts) / len(pts))
        out[fam] = res
    return out


def _nnls(a, y):  # -> (coefficients >= 0, squared error): exhaustive over the active set (a handful of columns)
    import itertools

    import numpy as np

    best_coef, best_err = np.zeros(a.shape[1]), float(np.sum(y ** 2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sol, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if (sol < 0).any():
                continue
            coef = np.zeros(a.shape[1])
            coef[list(cols)] = sol
            err = float(np.sum((y - a @ coef) ** 2))
            if err < best_err * (1 - 1e-9):
                best_coef, best_err = coef, err
    return best_coef, best_err


def _fit(pts: list[dict], fwd_bwd: list[int], opt: list[int]) -> dict[str, float]:
    import numpy as np

    from finetune.memory_model import boundary_bytes, gemma_layer_params, gemma_units, reference_config, \
        siglip_layer_params, siglip_units

    ref = reference_config()
    cases = [case_of(p) for p in pts]
    ckpt = cases[0].grad_ckpt
    wo = np.array([p["weights"] + p["optimizer"] for p in pts], dtype=float)
    grads = np.array([p["grads"] for p in pts], dtype=float)
    y = np.array(fwd_bwd, dtype=float) - wo
    bnd = np.zeros(len(pts))
    if ckpt:
        for i, c in enumerate(cases):
            g, v = boundary_bytes(model_config(c), c.mode == "lora", c.precision)
            bnd[i] = c.batch * (c.gemma_depth * g + c.siglip_depth * v)
    tied = all(c.siglip_depth * 2 == c.gemma_depth * 3 for c in cases)
    layer_cols = (lambda c: [c.gemma_depth]) if tied else (lambda c: [c.gemma_depth, c.siglip_depth])
    a_grad = np.array([[1.0, *layer_cols(c)] for c in cases])
    a_act = np.array([[1.0, *layer_cols(c), c.batch, *([] if ckpt else [c.batch * x for x in layer_cols(c)])]
                      for c in cases])
    y_grad, y_act = y - grads, y - bnd
    best = None
    for first in (0, 1, 2, 4, 8):  # first guesses (batch above which activations win), then each point to the
        on_act = np.array([c.batch > first for c in cases])  # line above it, until stable; the best fit wins
        for _ in range(50):
            cg, _ = _nnls(a_grad[~on_act], y_grad[~on_act]) if (~on_act).any() else (np.zeros(a_grad.shape[1]), 0)
            ca, _ = _nnls(a_act[on_act], y_act[on_act]) if on_act.any() else (np.zeros(a_act.shape[1]), 0)
            new = (a_act @ ca + bnd) > (a_grad @ cg + grads)
            if (new == on_act).all():
                break
            on_act = new
        pred = np.maximum(a_grad @ cg + grads, a_act @ ca + bnd)
        err = float(np.sum((y - pred) ** 2))
        # a clearly better fit only: an exact fit (4 points, 4 unknowns) is reached from several first guesses,
        # whose errors then differ by rounding alone, which differs between BLAS builds; the first one wins
        if best is None or err < best[0] * (1 - 1e-9) - 1.0:
            best = (err, cg, ca, pred)
    _, cg, ca, pred = best
    gp, vp = gemma_layer_params(ref), 1.5 * siglip_layer_params(ref)
    gu, vu = gemma_units(ref), 1.5 * siglip_units(ref)
    cg, ca = list(cg), list(ca)
    n = 1 if tied else 2

    def by_params(v: list[float]) -> list[float]:
        return [v[0] * gp / (gp + vp), v[0] * vp / (gp + vp) / 1.5] if tied else v

    grad_layers, act_layers = by_params(cg[1:1 + n]), by_params(ca[1:1 + n])
    per_sample, rest = ca[1 + n], ca[2 + n:]
    if ckpt:
        sample_layers = [0.0, 0.0]  # counted: finetune.memory_model.boundary_bytes
    elif tied:
        sample_layers = [rest[0] * gu / (gu + vu), rest[0] * vu / (gu + vu) / 1.5]
    else:
        sample_layers = rest
    res = dict(zip(("grad_fixed", "grad_fixed_gemma_layer", "grad_fixed_siglip_layer", "act_fixed",
                    "act_fixed_gemma_layer", "act_fixed_siglip_layer", "per_sample", "per_sample_gemma_layer",
                    "per_sample_siglip_layer"),
                   map(float, [cg[0], *grad_layers, ca[0], *act_layers, per_sample, *sample_layers])))
    res["rms_residual"] = float(np.sqrt(np.mean((y - pred) ** 2)))
    res["points"] = len(pts)
    sr = cases[0].precision == "bf16-sr"
    x = np.array([4.0 * p["largest_trainable"] if sr else p["optimizer"] / 2 for p in pts])
    tb = np.array([float(p["trainable_bytes"]) for p in pts])
    yo = np.array(opt, dtype=float) - wo - grads
    varies = np.ptp(x) > 0.05 * x.mean()
    if varies and sr:
        (slope, per_tb, intercept), _ = _nnls(np.stack([x, tb, np.ones_like(x)], 1), yo)
    elif varies:
        (slope, intercept), _ = _nnls(np.stack([x, np.ones_like(x)], 1), yo)
        per_tb = 0.0
    else:
        slope, per_tb = (6.0 if sr else 1.0), 0.0
        intercept = max(float(np.mean(yo - slope * x)), 0.0)
    res.update(opt_fixed=float(intercept), opt_slope=float(slope), opt_per_trainable_byte=float(per_tb))
    return res


def family(point: dict) -> str:
    c = case_of(point)
    return f"{c.mode}-{'fp32' if c.precision == 'fp32' else 'bf16'}-{'ckpt' if c.grad_ckpt else 'nockpt'}"


# ====================================================================================================== report
def report(points: list[dict]) -> None:
    from finetune import memory_model
    from finetune.memory_model import estimate
    from finetune.model_config import Pi0Config

    fitted = fit(points)
    if fitted != memory_model.COEFFICIENTS:
        print("\nthe fit differs from finetune/memory_model.py's COEFFICIENTS; the tables use the fit. Paste it:")
        memory_model.COEFFICIENTS.clear()
        memory_model.COEFFICIENTS.update(fitted)
    else:
        print("\nfit (bytes; as in finetune/memory_model.py COEFFICIENTS):")
    print(json.dumps(fitted, indent=1))
    print("\nmeasured vs predicted, GiB: peak RSS (the CPU estimate) and the allocator's forward+backward peak (the "
          "card estimate before its assumed slack and context); * = not fitted (validation)")
    print(f"{'case':<36} {'tensors':>7} {'RSS':>6} {'model':>6} {'err':>6}   {'alloc':>6} {'model':>6} {'err':>6} "
          f"{'step s':>6}")
    for p in points:
        c = case_of(p)
        kw = dict(lora=c.mode == "lora", precision=c.precision, batch=c.batch, grad_ckpt=c.grad_ckpt)
        cpu = estimate(model_config(c), **kw, device_kind="cpu")
        card = estimate(model_config(c), **kw)
        served = card.forward_backward
        alloc = p["weights"] + p["optimizer"] + p["inputs"] + p["fwd_bwd_alloc"]
        tensors = p["weights"] + p["grads"] + p["optimizer"]
        mark = "*" if validation_only(c) else " "
        print(f"{p['name'] + mark:<36} {tensors / GIB:7.2f} {p['peak'] / GIB:6.2f} {cpu.total / GIB:6.2f} "
              f"{100 * (cpu.total / p['peak'] - 1):+5.1f}%   {alloc / GIB:6.2f} {served / GIB:6.2f} "
              f"{100 * (served / alloc - 1):+5.1f}% {p['step_s'][-1]:6.1f}")
    print("\npredicted for the full-size pi0, 3 cameras, gradient checkpointing on (GiB):")
    mc = Pi0Config.variant("pi0")
    print(f"{'set-up':<28} " + " ".join(f"{'b' + str(b):>7}" for b in (1, 2, 4, 8, 32)) + "  (CUDA card; CPU RAM)")
    for label, lora, prec in (("LoRA, bf16-amp", True, "bf16-amp"), ("full, bf16-amp", False, "bf16-amp"),
                              ("full, bf16-sr", False, "bf16-sr"), ("full, fp32", False, "fp32")):
        cuda = [estimate(mc, lora=lora, precision=prec, batch=b, grad_ckpt=True).total / GIB for b in (1, 2, 4, 8, 32)]
        cpu = [estimate(mc, lora=lora, precision=prec, batch=b, grad_ckpt=True, device_kind="cpu").total / GIB
               for b in (1, 2, 4, 8, 32)]
        print(f"{label:<28} " + " ".join(f"{x:7.1f}" for x in cuda) + "   CPU: " + " ".join(f"{x:.1f}" for x in cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--only", default="", help="comma-separated substrings of case names")
    ap.add_argument("--report", action="store_true", help="no measuring: fit and table from the stored points")
    ap.add_argument("--redo", action="store_true", help="measure cases already in the points file again")
    ap.add_argument("--points", default=str(POINTS))
    ap.add_argument("--timeout", type=float, default=1800, help="per case, seconds")
    a = ap.parse_args()
    if a.child:
        c = Case(**json.loads(a.child))
        print(json.dumps(child(c)), flush=True)
        return
    path = Path(a.points)
    points = load_points(path)
    if not a.report:
        have = {p["name"] for p in points}
        cases = [c for c in grid(tuple(int(x) for x in a.batches.split(",")))
                 if not a.only or any(s in c.name for s in a.only.split(","))]
        for c in cases:
            if c.name in have and not a.redo:
                continue
            print(f"measuring {c.name} ...", flush=True)
            r = run_case(c, a.timeout)
            if r is None:
                continue
            points = [p for p in points if p["name"] != c.name] + [r]
            save_points(points, path)
            print(f"  peak {r['peak'] / GIB:.2f} GiB (fwd+bwd {r['fwd_bwd_peak'] / GIB:.2f}, optimizer step "
                  f"{r['opt_peak'] / GIB:.2f}; tensors {(r['weights'] + r['grads'] + r['optimizer']) / GIB:.2f}), "
                  f"step {r['step_s'][-1]:.1f} s", flush=True)
    report(points)


if __name__ == "__main__":
    main()
