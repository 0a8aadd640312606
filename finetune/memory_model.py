"""How much memory a pi0 training run needs, before building anything: the fitted model of bench/bench_memory.py.

    est = estimate(Pi0Config.variant("pi0"), lora=True, precision="bf16-amp", batch=32, grad_ckpt=True)
    est.total, est.breakdown()            # bytes; weights, gradients, optimizer, activations, ...
    warning = fit_warning(mc, lora, precision, batch, grad_ckpt, device_memory("cuda"))  # None when it fits

Two parts:
  * FIXED, counted exactly from the configuration (no torch: the GUI calls this): every parameter of the model as
    `finetune.train.build_policy` makes it (dtype per the precision policy, LoRA adapters fp32, what trains), its
    gradient, the optimizer state (AdamW moments: the parameter's dtype; the stochastic-rounding AdamW: fp32);
    tests/finetune/test_memory_model.py checks the count against the real model tensor by tensor.
  * FITTED, from measurements on a CPU (bench/memory_points.json, least squares in bench_memory.fit): what a step
    needs beyond those tensors, `fixed + per-layer + B * (per_sample + L * per_gemma_layer + S * per_siglip_layer)`,
    and the optimizer step's temporaries. Measured on pi0's shapes at full width with fewer layers; other shapes
    are scaled by their token counts x widths and layer sizes (not measured).

The peak is the larger of the forward+backward peak (every gradient exists at the end of the backward pass) and
the optimizer step's (the gradients plus the update's temporaries). Two fits per family:
  * the CPU estimate (`device_kind="cpu"`): the peak RSS (VmHWM) of the training process, the process and the C
    heap's retention included;
  * the CUDA estimate: the peak of the bytes torch's allocator handed out (the profiler's memory events, the CPU's
    counterpart of `torch.cuda.max_memory_allocated`), plus what it assumes for a card (not measured: no GPU was
    lent to the session that built this):
      - activations per sample as the CPU allocates them (CUDA's memory-efficient SDPA kernel keeps no score
        matrix and cuDNN is not used by this model's ops: this errs high, if anywhere);
      - the fused AdamW (no temporaries); the stochastic-rounding AdamW's per-tensor temporaries as measured;
      - the caching allocator reserving 10 % more than it hands out (block rounding, fragmentation) and 0.6 GiB
        outside it (CUDA context, cuBLAS workspaces), both inside `total_memory`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from finetune.model_config import Pi0Config

GIB = 2 ** 30
CUDA_ALLOCATOR_FACTOR = 1.10  # assumed: reserved / allocated of the caching allocator in a training loop
CUDA_CONTEXT_BYTES = int(0.6 * GIB)  # assumed: CUDA context + cuBLAS workspaces, outside torch's allocator

# The fit of bench/bench_memory.py over bench/memory_points.json (bytes; regenerate with
# `python bench/bench_memory.py --report`). Families: (lora | full) x activation dtype x checkpointing.
COEFFICIENTS: dict[str, dict[str, float]] = {
    "full-bf16-ckpt": {
        "grad_fixed": 623579906.1818178,
        "grad_fixed_gemma_layer": 138884489.45454538,
        "grad_fixed_siglip_layer": 9198002.424242413,
        "act_fixed": 234399600.06799015,
        "act_fixed_gemma_layer": 381990361.35977316,
        "act_fixed_siglip_layer": 41329221.106704354,
        "per_sample": 252422022.16430566,
        "per_sample_gemma_layer": 0.0,
        "per_sample_siglip_layer": 0.0,
        "rms_residual": 145250877.98601234,
        "points": 15,
        "opt_fixed": 1252449995.020669,
        "opt_slope": 4.8998333635958575,
        "opt_per_trainable_byte": 0.4263071564340417,
        "alloc_grad_fixed": 1444741.0909090915,
        "alloc_grad_fixed_gemma_layer": 3197920.7272727303,
        "alloc_grad_fixed_siglip_layer": 1500541.575757574,
        "alloc_act_fixed": 0.0,
        "alloc_act_fixed_gemma_layer": 170730345.89441004,
        "alloc_act_fixed_siglip_layer": 4047436.8217580616,
        "alloc_per_sample": 213249310.80745348,
        "alloc_per_sample_gemma_layer": 0.0,
        "alloc_per_sample_siglip_layer": 0.0,
        "alloc_rms_residual": 71412069.4392529,
        "alloc_opt_fixed": 11.999999994476731,
        "alloc_opt_slope": 6.0,
        "alloc_opt_per_trainable_byte": 0.0,
        "base_rss": 234088038.4
    },
    "lora-bf16-ckpt": {
        "grad_fixed": 0.0,
        "grad_fixed_gemma_layer": 0.0,
        "grad_fixed_siglip_layer": 0.0,
        "act_fixed": 787548231.3506176,
        "act_fixed_gemma_layer": 50359117.29393169,
        "act_fixed_siglip_layer": 68046233.33990008,
        "per_sample": 290455821.4887093,
        "per_sample_gemma_layer": 0.0,
        "per_sample_siglip_layer": 0.0,
        "rms_residual": 132910721.86209859,
        "points": 14,
        "opt_fixed": 1045685545.7102154,
        "opt_slope": 1.011409929014444,
        "opt_per_trainable_byte": 0.0,
        "alloc_grad_fixed": 49368055.99999991,
        "alloc_grad_fixed_gemma_layer": 49423856.00000001,
        "alloc_grad_fixed_siglip_layer": 0.0,
        "alloc_act_fixed": 14202691.120042568,
        "alloc_act_fixed_gemma_layer": 4598055.637727797,
        "alloc_act_fixed_siglip_layer": 30142601.489103127,
        "alloc_per_sample": 276294121.85530555,
        "alloc_per_sample_gemma_layer": 0.0,
        "alloc_per_sample_siglip_layer": 0.0,
        "alloc_rms_residual": 1778620.682790071,
        "alloc_opt_fixed": 0.0,
        "alloc_opt_slope": 0.9999989727300026,
        "alloc_opt_per_trainable_byte": 0.0,
        "base_rss": 233958253.7142857
    },
    "lora-bf16-nockpt": {
        "grad_fixed": 0.0,
        "grad_fixed_gemma_layer": 0.0,
        "grad_fixed_siglip_layer": 0.0,
        "act_fixed": 583734363.9999981,
        "act_fixed_gemma_layer": 201275333.84445587,
        "act_fixed_siglip_layer": 24074886.770363037,
        "per_sample": 37494784.000001274,
        "per_sample_gemma_layer": 102915288.39960133,
        "per_sample_siglip_layer": 28182383.733598918,
        "rms_residual": 3.371747880871523e-07,
        "points": 4,
        "opt_fixed": 535496239.1375091,
        "opt_slope": 2.889648902178602,
        "opt_per_trainable_byte": 0.0,
        "alloc_grad_fixed": 0.0,
        "alloc_grad_fixed_gemma_layer": 0.0,
        "alloc_grad_fixed_siglip_layer": 0.0,
        "alloc_act_fixed": 0.0,
        "alloc_act_fixed_gemma_layer": 43855031.30092461,
        "alloc_act_fixed_siglip_layer": 5245575.2660502605,
        "alloc_per_sample": 0.0,
        "alloc_per_sample_gemma_layer": 139774617.44498363,
        "alloc_per_sample_siglip_layer": 38275964.30334424,
        "alloc_rms_residual": 10650690.852075392,
        "alloc_opt_fixed": 17.7081252859242,
        "alloc_opt_slope": 0.9999989481718133,
        "alloc_opt_per_trainable_byte": 0.0,
        "base_rss": 234241024.0
    }
}

# what the coefficients were measured on (pi0's shapes); other shapes scale by the units below
_REF = Pi0Config.variant("pi0").with_cameras(3)

# --- the parameter rules of finetune.train.build_policy / finetune.lora / finetune.model (checked by the test) ---
_FP32_MARKERS = ("input_layernorm.", "post_attention_layernorm.", "language_model.norm.", "gemma_expert.model.norm.",
                 "embeddings.patch_embedding.", "embeddings.position_embedding.")  # finetune.model.pi0
_LORA_FROZEN = ("paligemma_with_expert.paligemma.model.language_model.", "paligemma_with_expert.gemma_expert.",
                "paligemma_with_expert.paligemma.lm_head.")  # finetune.lora.FROZEN_PREFIXES
_VLM = "paligemma_with_expert.paligemma.model."
_EXPERT = "paligemma_with_expert.gemma_expert.model."
_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class Tensor_:
    """One parameter as the trainer holds it."""

    name: str
    numel: int
    dtype: str  # "float32" | "bfloat16"
    trainable: bool

    @property
    def nbytes(self) -> int:
        return self.numel * _BYTES[self.dtype]


def _norm(name: str, width: int, adaptive: bool) -> Iterator[tuple[str, int, bool]]:
    """One RMSNorm's parameters: its weight, or (pi0.5's expert, finetune.model.gemma.AdaRMSNorm) the modulation
    Linear(cond width -> 3 x width, bias) giving scale, shift and gate."""
    if adaptive:
        yield name + ".dense.weight", 3 * width * width, False
        yield name + ".dense.bias", 3 * width, False
    else:
        yield name + ".weight", width, False


def _gemma_layer(prefix: str, g, lora_rank: int | None, adaptive: bool = False) -> Iterator[tuple[str, int, bool]]:
    """(name, numel, is a LoRA adapter) of one Gemma layer; with a rank, each projection gets adapters (peft).
    `adaptive`: pi0.5's expert layers (adaptive norms)."""
    hd = g.head_dim
    shapes = {"self_attn.q_proj": (g.width, g.num_heads * hd), "self_attn.k_proj": (g.width, g.num_kv_heads * hd),
              "self_attn.v_proj": (g.width, g.num_kv_heads * hd), "self_attn.o_proj": (g.num_heads * hd, g.width),
              "mlp.gate_proj": (g.width, g.mlp_dim), "mlp.up_proj": (g.width, g.mlp_dim),
              "mlp.down_proj": (g.mlp_dim, g.width)}
    yield from _norm(prefix + "input_layernorm", g.width, adaptive)
    yield from _norm(prefix + "post_attention_layernorm", g.width, adaptive)
    for name, (fan_in, fan_out) in shapes.items():
        if lora_rank is None:
            yield f"{prefix}{name}.weight", fan_in * fan_out, False
        else:
            yield f"{prefix}{name}.base_layer.weight", fan_in * fan_out, False
            yield f"{prefix}{name}.lora_A.default.weight", lora_rank * fan_in, True
            yield f"{prefix}{name}.lora_B.default.weight", fan_out * lora_rank, True


def _inventory(cfg: Pi0Config, lora: bool) -> Iterator[tuple[str, int, bool]]:
    """Every parameter of the model cfg builds (Pi0, or Pi05 for a pi0.5 config; after finetune.lora.apply_lora
    when `lora`): (name, numel, is an adapter)."""
    v, p, e = cfg.vision, cfg.paligemma, cfg.expert
    vt = _VLM + "vision_tower.vision_model."
    yield vt + "embeddings.patch_embedding.weight", v.width * 3 * v.patch_size ** 2, False
    yield vt + "embeddings.patch_embedding.bias", v.width, False
    yield vt + "embeddings.position_embedding.weight", v.num_patches * v.width, False
    for i in range(v.depth):
        layer = f"{vt}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            yield f"{layer}{ln}.weight", v.width, False
            yield f"{layer}{ln}.bias", v.width, False
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{layer}self_attn.{proj}.weight", v.width * v.width, False
            yield f"{layer}self_attn.{proj}.bias", v.width, False
        yield f"{layer}mlp.fc1.weight", v.width * v.mlp_dim, False
        yield f"{layer}mlp.fc1.bias", v.mlp_dim, False
        yield f"{layer}mlp.fc2.weight", v.mlp_dim * v.width, False
        yield f"{layer}mlp.fc2.bias", v.width, False
    yield vt + "post_layernorm.weight", v.width, False
    yield vt + "post_layernorm.bias", v.width, False
    yield _VLM + "multi_modal_projector.linear.weight", v.width * p.width, False
    yield _VLM + "multi_modal_projector.linear.bias", p.width, False
    yield _VLM + "language_model.embed_tokens.weight", cfg.vocab_size * p.width, False  # = lm_head (tied)
    for i in range(p.depth):  # openpi's LoRA ranks (finetune.lora.LoraSpec): 16 on the VLM, 32 on the expert
        yield from _gemma_layer(f"{_VLM}language_model.layers.{i}.", p, 16 if lora else None)
    yield _VLM + "language_model.norm.weight", p.width, False
    for i in range(e.depth):
        yield from _gemma_layer(f"{_EXPERT}layers.{i}.", e, 32 if lora else None, adaptive=cfg.pi05)
    yield from _norm(_EXPERT + "norm", e.width, cfg.pi05)
    w = e.width
    if cfg.pi05:  # no state token, no action-time MLP: the time's own MLP feeds the adaptive norms
        heads = (("action_in_proj", cfg.action_dim, w), ("time_mlp_in", w, w), ("time_mlp_out", w, w),
                 ("action_out_proj", w, cfg.action_dim))
    else:
        heads = (("state_proj", cfg.state_dim, w), ("action_in_proj", cfg.action_dim, w),
                 ("action_time_mlp_in", 2 * w, w), ("action_time_mlp_out", w, w),
                 ("action_out_proj", w, cfg.action_dim))
    for name, fan_in, fan_out in heads:
        yield f"{name}.weight", fan_in * fan_out, False
        yield f"{name}.bias", fan_out, False


def checkpoint_parameters(cfg: Pi0Config) -> int:
    """Parameters a hub checkpoint of cfg stores (lerobot/pi0_base, lerobot/pi05_base: 3,616,757,520): the model's,
    plus the expert's lm_head (stored, never built: finetune.checkpoint.IGNORED_KEYS); the tied embedding once."""
    return sum(n for _, n, _ in _inventory(cfg, False)) + cfg.vocab_size * cfg.expert.width


def _unused(cfg: Pi0Config) -> tuple[str, ...]:
    """finetune.model.gemma.unused_in_training: the loss never reaches these, the trainer freezes them."""
    last = f"{_VLM}language_model.layers.{cfg.paligemma.depth - 1}."
    return (last + "self_attn.o_proj.", last + "post_attention_layernorm.", last + "mlp.",
            _VLM + "language_model.norm.")


def resolve_precision(precision: str, device_kind: str) -> str:
    """"auto" as finetune.train.resolve_precision reads it: bf16-amp on CUDA, fp32 on the CPU."""
    if precision == "auto":
        return "bf16-amp" if device_kind == "cuda" else "fp32"
    return precision


def parameters(cfg: Pi0Config, lora: bool, precision: str) -> list[Tensor_]:
    """The trainer's parameters: finetune.train.build_policy's dtype and freezing rules, counted, not built."""
    base = "bfloat16" if (lora and precision != "fp32") else (
        "float32" if precision in ("fp32", "bf16-amp") else "bfloat16")
    unused = _unused(cfg)
    out = []
    for name, numel, adapter in _inventory(cfg, lora):
        trainable = (adapter or not name.startswith(_LORA_FROZEN)) if lora else True
        trainable = trainable and not name.startswith(unused)
        marker = any(m in name for m in _FP32_MARKERS)
        dtype = "float32" if adapter or marker else base
        if precision == "bf16-amp":  # fp32 master weights for what trains, bf16 storage for the rest
            dtype = "float32" if trainable or marker else "bfloat16"
        out.append(Tensor_(name, numel, dtype, trainable))
    return out


# --- activations: scaled from pi0's shapes by token count x width ---------------------------------------------------
def gemma_units(cfg: Pi0Config) -> float:
    """One Gemma layer pair's activations per sample: tokens x (width + MLP width), prefix and suffix."""
    p, e = cfg.paligemma, cfg.expert
    return cfg.prefix_len * (p.width + p.mlp_dim) + cfg.suffix_len * (e.width + e.mlp_dim)


def siglip_units(cfg: Pi0Config) -> float:
    """One SigLIP layer's activations per sample: every camera's patches x (width + MLP width)."""
    return cfg.num_cameras * cfg.vision.num_patches * (cfg.vision.width + cfg.vision.mlp_dim)


def gemma_layer_params(cfg: Pi0Config) -> int:
    """Parameters of one Gemma layer pair (VLM + expert): the per-layer fixed terms scale with them."""
    return sum(n for name, n, _ in _inventory(cfg, False) if ".layers.0." in name and "vision_tower" not in name)


def siglip_layer_params(cfg: Pi0Config) -> int:
    return sum(n for name, n, _ in _inventory(cfg, False) if "encoder.layers.0." in name)


def boundary_bytes(cfg: Pi0Config, lora: bool, precision: str) -> tuple[int, int]:
    """What gradient checkpointing keeps per layer and sample: each checkpointed layer's input. (Gemma pair:
    prefix and suffix hidden states; SigLIP: every camera's patch tokens), in the dtype they flow in: bf16 under
    bf16 compute, fp32 for "fp32"; SigLIP's stream takes its weights' dtype (fp32 master weights under bf16-amp).
    Counted, not fitted: depth-reduced measurements cannot pin a term that 18 and 27 layers multiply."""
    p, e, v = cfg.paligemma, cfg.expert, cfg.vision
    gemma = (cfg.prefix_len * p.width + cfg.suffix_len * e.width) * (4 if precision == "fp32" else 2)
    siglip = cfg.num_cameras * v.num_patches * v.width * (4 if precision in ("fp32", "bf16-amp") else 2)
    return gemma, siglip


def sample_units(cfg: Pi0Config) -> float:
    """The per-sample term that does not grow with depth: the one layer being recomputed and differentiated at a
    time under checkpointing (its internals) and the attention mask / scores (heads x sequence^2)."""
    seq = cfg.prefix_len + cfg.suffix_len
    return gemma_units(cfg) + cfg.paligemma.num_heads * seq * seq


def _family(lora: bool, precision: str, grad_ckpt: bool) -> tuple[str, float]:
    """Which fitted family answers, and the activation factor applied to it (fp32 activations: x2, assumed
    where no fp32 family was measured)."""
    mode = "lora" if lora else "full"
    ckpt = "ckpt" if grad_ckpt else "nockpt"
    candidates = [f"{mode}-bf16-{ckpt}", f"lora-bf16-{ckpt}", f"{mode}-bf16-ckpt", *sorted(COEFFICIENTS)]
    fam = next((c for c in candidates if c in COEFFICIENTS), None)
    if fam is None:
        raise RuntimeError("finetune.memory_model has no fitted coefficients; run `python bench/bench_memory.py`")
    return fam, (2.0 if precision == "fp32" else 1.0)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, per process. `total` is what the device must hold at the step's peak; `breakdown()` sums to it."""

    device_kind: str  # "cuda" | "cpu"
    precision: str
    batch: int
    params: int  # parameter count
    trainable: int
    weights: int
    gradients: int
    optimizer: int  # Adam moments (+ EMA shadow)
    activations: int  # at the backward pass's activation peak: batch x per sample
    step_extra: int  # beside them at the peak: what does not grow with the batch (CPU: the process itself too)
    optimizer_temporaries: int  # during the update
    overhead: int  # CUDA: allocator slack + context
    peak_phase: str  # ACTIVATIONS | GRADIENTS | UPDATE
    total: int
    forward_backward: int = 0  # the forward+backward phase's peak alone (no overhead): the fit's own figure
    model: str = ""  # the model config's name (pi0, pi05, pi0_small, ...)

    def breakdown(self) -> dict[str, int]:
        """What lives at the peak: its parts sum to `total`."""
        parts = {"weights": self.weights, "optimizer": self.optimizer}
        if self.peak_phase == ACTIVATIONS:  # the gradients made so far are in the step extra
            parts.update({"activations": self.activations, "step extra": self.step_extra})
        elif self.peak_phase == GRADIENTS:
            parts.update({"gradients": self.gradients, "step extra": self.step_extra})
        else:
            parts.update({"gradients": self.gradients, "optimizer temporaries": self.optimizer_temporaries})
        if self.overhead:
            parts["allocator + context"] = self.overhead
        return parts

    def describe(self) -> str:
        """'weights 6.6, optimizer 3.4, activations 9.1, step extra 0.3 GB; peak: the backward pass's activations;
        model pi05, 3.35 B parameters (0.47 B trainable)'."""
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.breakdown().items() if v)
        model = (f"; model {self.model}, {_count(self.params)} parameters ({_count(self.trainable)} trainable)"
                 if self.model else "")
        return f"{parts} GB; peak: {self.peak_phase}{model}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 100_000_000 else f"{n / 1e6:.2f} M"


ACTIVATIONS = "the backward pass's activations"
GRADIENTS = "the end of the backward pass (every gradient)"
UPDATE = "the optimizer step"


def _c(fam: str, device_kind: str, name: str) -> float:
    """A fitted coefficient: the peak-RSS fit for the CPU, the allocator fit ("alloc_") for a card."""
    return COEFFICIENTS[fam][("" if device_kind == "cpu" else "alloc_") + name]


def estimate(model_config: Pi0Config, lora: bool, precision: str, batch: int, grad_ckpt: bool, *,
             device_kind: str = "cuda", ema: bool = False, ddp: bool = False) -> MemoryEstimate:
    """Peak memory of one training step of `model_config` at `batch` samples per process on a CUDA card or the
    CPU (`device_kind`). `precision` as `workbench train --precision` takes it ("auto" resolved per device);
    `ema`: an EMA of the weights (fp32 shadow); `ddp`: one of several DDP processes (its gradient buckets)."""
    if batch < 1:
        raise ValueError(f"batch must be 1 or more, not {batch}")
    precision = resolve_precision(precision, device_kind)
    params = parameters(model_config, lora, precision)
    train = [t for t in params if t.trainable]
    weights = sum(t.nbytes for t in params)
    grads = sum(t.nbytes for t in train)
    sr = precision == "bf16-sr"
    optim = sum(8 * t.numel if sr else 2 * t.nbytes for t in train)
    trainable_bytes = sum(t.nbytes for t in train)
    fam, act_factor = _family(lora, precision, grad_ckpt)

    def c(name: str) -> float:
        return _c(fam, device_kind, name)

    L, S = model_config.paligemma.depth, model_config.vision.depth
    g_layers = L * gemma_layer_params(model_config) / gemma_layer_params(_REF)  # in layers of pi0's size
    s_layers = S * siglip_layer_params(model_config) / siglip_layer_params(_REF)
    # the end of the backward pass: every gradient, and what the fit finds beside them
    at_grads = max(c("grad_fixed") + c("grad_fixed_gemma_layer") * g_layers + c("grad_fixed_siglip_layer") * s_layers,
                   0.0)
    # the activation peak: one layer's recompute + backward per sample (fitted) and each layer's kept input
    # (checkpointing: counted) or all of every layer's activations (no checkpointing: fitted per layer)
    if grad_ckpt:
        gemma_b, siglip_b = boundary_bytes(model_config, lora, precision)
        per_layer = L * gemma_b + S * siglip_b
    else:
        per_layer = act_factor * (c("per_sample_gemma_layer") * L * gemma_units(model_config) / gemma_units(_REF)
                                  + c("per_sample_siglip_layer") * S * siglip_units(model_config)
                                  / siglip_units(_REF))
    per_sample = act_factor * c("per_sample") * sample_units(model_config) / sample_units(_REF) + per_layer
    activations = int(batch * max(per_sample, 0.0))
    beside = max(c("act_fixed") + c("act_fixed_gemma_layer") * g_layers + c("act_fixed_siglip_layer") * s_layers,
                 0.0)
    # the update's temporaries: stochastic rounding works tensor by tensor (fp32 copies of the largest tensor's
    # gradient, weight, update and noise: the stochastic-rounding family's fit); the CPU's foreach AdamW copies
    # sqrt(v) of all tensors (the AdamW family's); CUDA's fused AdamW makes none
    opt_tmp = 0.0
    if sr or device_kind == "cpu":
        o = "full-bf16-ckpt" if sr else "lora-bf16-ckpt"
        o = o if o in COEFFICIENTS else fam
        x = 4 * max(t.numel for t in train) if sr else optim / 2
        opt_tmp = (_c(o, device_kind, "opt_slope") * x + _c(o, device_kind, "opt_fixed")
                   + _c(o, device_kind, "opt_per_trainable_byte") * trainable_bytes)
    if ema:
        optim += 4 * sum(t.numel for t in train)
        opt_tmp += 4 * sum(t.numel for t in train if t.dtype != "float32")  # the update's fp32 copies
    if ddp:
        grads *= 2  # DDP's gradient buckets hold a second copy
    phases = {ACTIVATIONS: (activations + beside, int(beside)), GRADIENTS: (grads + at_grads, int(at_grads)),
              UPDATE: (grads + opt_tmp, 0)}
    phase = max(phases, key=lambda k: phases[k][0])
    peak = weights + optim + int(phases[phase][0])
    overhead = int((CUDA_ALLOCATOR_FACTOR - 1) * peak) + CUDA_CONTEXT_BYTES if device_kind == "cuda" else 0
    fwd_bwd = weights + optim + int(max(phases[ACTIVATIONS][0], phases[GRADIENTS][0]))
    return MemoryEstimate(device_kind, precision, batch, sum(t.numel for t in params), sum(t.numel for t in train),
                          weights, grads, optim, activations, phases[phase][1], int(opt_tmp), overhead, phase,
                          peak + overhead, fwd_bwd, model_config.name)


def largest_batch(model_config: Pi0Config, lora: bool, precision: str, grad_ckpt: bool, capacity: int, *,
                  device_kind: str = "cuda", ema: bool = False, ddp: bool = False, limit: int = 4096) -> int:
    """The largest batch whose estimate fits `capacity` bytes (0: not even batch 1)."""
    def ok(b: int) -> bool:
        return estimate(model_config, lora, precision, b, grad_ckpt, device_kind=device_kind, ema=ema,
                        ddp=ddp).total <= capacity

    if not ok(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:  # the estimate grows with the batch
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


# --- the device's memory ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceMemory:
    kind: str  # "cuda" | "cpu"
    name: str  # "NVIDIA H100 80GB HBM3", "cpu"
    total: int  # bytes: a card's total memory; the CPU's RAM available now (MemAvailable)

    @property
    def label(self) -> str:
        return self.name if self.kind == "cpu" else f"{self.name} ({self.kind})"


def cpu_memory() -> DeviceMemory:
    """The RAM available now (/proc/meminfo MemAvailable; the machine's other processes keep the rest)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return DeviceMemory("cpu", "cpu", int(line.split()[1]) * 1024)
    except OSError:
        pass
    return DeviceMemory("cpu", "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def cuda_memory(index: int = 0) -> DeviceMemory | None:
    """A card's memory through torch (the trainer's process, which imports torch anyway); None without CUDA."""
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    props = torch.cuda.get_device_properties(index)
    return DeviceMemory("cuda", props.name, int(props.total_memory))


def cuda_memory_nvidia_smi(index: int = 0) -> DeviceMemory | None:
    """A card's memory without importing torch or creating a CUDA context (the GUI): nvidia-smi's report."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits", "-i",
                              str(index)], capture_output=True, text=True, timeout=5, check=True).stdout
        name, mib = (s.strip() for s in out.strip().splitlines()[0].rsplit(",", 1))
        return DeviceMemory("cuda", name, int(float(mib)) * 2 ** 20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def device_memory(device: str, use_torch: bool = True) -> DeviceMemory | None:
    """The memory of `workbench train --device` (auto, cuda, cuda:N, cpu); None: a CUDA device that is not there."""
    if device == "cpu":
        return cpu_memory()
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    gpu = cuda_memory(index) if use_torch else cuda_memory_nvidia_smi(index)
    if gpu is None and device == "auto":
        return cpu_memory()
    return gpu


# --- what to tell the user ------------------------------------------------------------------------------------------
def advice(model_config: Pi0Config, lora: bool, precision: str, batch: int, grad_ckpt: bool, capacity: int, *,
           device_kind: str = "cuda", ema: bool = False, most: int = 3) -> list[str]:
    """Up to `most` changes that make the run fit `capacity`, fewest changes first, each with its estimate:
    "--batch 8 (~21.0 GB)", "--lora (~18.2 GB)", "--lora --precision bf16-sr --batch 4 (~23.5 GB)". Empty when
    nothing fits, not even at batch 1 with every change (see `fit_warning`)."""
    changes: list[tuple[str, dict]] = []
    if not grad_ckpt:
        changes.append(("--grad-ckpt", {"grad_ckpt": True}))
    if not lora:
        changes.append(("--lora", {"lora": True}))
    if resolve_precision(precision, device_kind) != "bf16-sr":
        changes.append(("--precision bf16-sr", {"precision": "bf16-sr"}))
    subsets = sorted((tuple(c for i, c in enumerate(changes) if mask >> i & 1) for mask in range(1 << len(changes))),
                     key=len)
    tips = []
    for subset in subsets:
        kw = dict(lora=lora, precision=precision, grad_ckpt=grad_ckpt)
        for _, change in subset:
            kw.update(change)
        best = largest_batch(model_config, **kw, capacity=capacity, device_kind=device_kind, ema=ema, limit=batch)
        if best == 0:
            continue
        flags = [flag for flag, _ in subset] + ([f"--batch {best}"] if best < batch else [])
        est = estimate(model_config, batch=best, **kw, device_kind=device_kind, ema=ema)
        tips.append(f"{' '.join(flags)} (~{est.total / GIB:.1f} GB)")
        if len(tips) == most:
            break
    return tips


def fit_line(est: MemoryEstimate, dev: DeviceMemory | None) -> str:
    """'needs ~X GB on <device> (has Y GB)': the Train tab's line and the CLI's first words."""
    if dev is None:
        return f"needs ~{est.total / GIB:.1f} GB on a CUDA card (none visible)"
    avail = "" if dev.kind == "cuda" else " available"
    return f"needs ~{est.total / GIB:.1f} GB on {dev.label} (has {dev.total / GIB:.1f} GB{avail})"


def fits(est: MemoryEstimate, dev: DeviceMemory | None) -> bool:
    return dev is not None and est.total <= dev.total


def fit_warning(model_config: Pi0Config, lora: bool, precision: str, batch: int, grad_ckpt: bool,
                dev: DeviceMemory | None, *, ema: bool = False) -> str | None:
    """None when the run fits the device, else the warning: the estimate, its breakdown, what to change."""
    if dev is None:
        return None
    est = estimate(model_config, lora, precision, batch, grad_ckpt, device_kind=dev.kind, ema=ema)
    if fits(est, dev):
        return None
    tips = advice(model_config, lora, precision, batch, grad_ckpt, dev.total, device_kind=dev.kind, ema=ema)
    if tips:
        fix = "; try " + ", or ".join(tips)
    else:
        least = estimate(model_config, True, "bf16-sr", 1, True, device_kind=dev.kind, ema=ema)
        fix = (f"; it does not fit even with --lora --precision bf16-sr --grad-ckpt at batch 1 "
               f"(~{least.total / GIB:.1f} GB): use a bigger device or several (--gpus N --fsdp)")
    return f"this run {fit_line(est, dev)} ({est.describe()}){fix}. (finetune/memory_model.py's estimate.)"


def reference_config() -> Pi0Config:
    return dataclasses.replace(_REF)


__all__ = ["COEFFICIENTS", "CUDA_ALLOCATOR_FACTOR", "CUDA_CONTEXT_BYTES", "DeviceMemory", "MemoryEstimate",
           "advice", "checkpoint_parameters", "cpu_memory", "cuda_memory", "cuda_memory_nvidia_smi", "device_memory",
           "estimate", "fit_line", "fit_warning", "fits", "largest_batch", "parameters", "resolve_precision"]
