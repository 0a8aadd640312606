"""Gemma decoder layers and pi0's two-expert transformer with shared attention (pi0 and pi0.5).

Module attribute names mirror the Hugging Face key layout of `lerobot/pi0_base`, so `state_dict()` keys are the
checkpoint keys (e.g. `paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.weight`).

One forward handles the three ways pi0 runs the transformer:
  training  : prefix (VLM weights) + suffix (expert weights) together, block-wise mask;
  prefill   : prefix only, returning every layer's K/V (after RoPE) for the cache;
  denoise   : suffix only, attending to the cached prefix K/V plus itself.

pi0.5 makes the expert's norms adaptive (AdaRMSNorm): the suffix group gets a condition (the flow time through
pi0.5's time MLP) that every expert norm turns into a scale, a shift and a residual gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from finetune.model_config import GemmaConfig, Pi0Config
from finetune.model.siglip import SiglipVisionTower

# openpi's masked-logit value: large but finite, so a fully masked (padding) query row stays finite.
MASK_VALUE = -2.3819763e38

KVCache = list[tuple[Tensor, Tensor]]


class RMSNorm(nn.Module):
    """Gemma RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), in fp32 (the stored w is near 0, bf16 would lose it)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


class AdaRMSNorm(nn.Module):
    """pi0.5's adaptive RMSNorm: `dense` (cond -> 3 x dim, with bias) gives scale, shift and gate;
    out = norm(x) * (1 + scale) + shift (norm in fp32), and the caller gates its residual: x + y * gate.

    cond is [B, C] (one per sample, broadcast over the tokens) or [B, S, C] (one per token)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.dim = eps, dim
        self.dense = nn.Linear(cond_dim, 3 * dim)

    def _modulation(self, cond: Tensor, start: int, stop: int) -> Tensor:
        w, b = self.dense.weight, self.dense.bias
        m = F.linear(cond.to(w.dtype), w[start * self.dim:stop * self.dim], b[start * self.dim:stop * self.dim])
        return m[:, None] if m.ndim == 2 else m

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift = self._modulation(cond, 0, 2).float().chunk(2, dim=-1)
        return (y * (1.0 + scale) + shift).to(x.dtype)

    def gate(self, cond: Tensor) -> Tensor:
        """The residual gate [B, 1 or S, dim] (only its third of `dense` is computed)."""
        return self._modulation(cond, 2, 3)


def _norm(norm: nn.Module, x: Tensor, cond: Tensor | None) -> Tensor:
    return norm(x) if cond is None else norm(x, cond)


def _gated(x: Tensor, y: Tensor, norm: nn.Module, cond: Tensor | None) -> Tensor:
    """The residual after a sub-block: x + y (plain), x + y * gate (adaptive norm)."""
    return x + y if cond is None else x + y * norm.gate(cond).to(y.dtype)


class GemmaAttention(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)


class GemmaMLP(nn.Module):
    """GeGLU with the tanh GELU approximation."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaDecoderLayer(nn.Module):
    """A Gemma layer split in two halves around the attention, which is shared with the other expert."""

    def __init__(self, cfg: GemmaConfig, cond_dim: int | None = None) -> None:
        """cond_dim: adaptive norms conditioned on a [.., cond_dim] vector (pi0.5's expert); None: plain ones."""
        super().__init__()
        self.input_layernorm = _make_norm(cfg, cond_dim)
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = _make_norm(cfg, cond_dim)
        self.mlp = GemmaMLP(cfg)

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """[B, S, W] -> q [B, H, S, D], k/v [B, KV, S, D], RoPE applied to q and k."""
        a = self.self_attn
        b, s, _ = x.shape
        h = _norm(self.input_layernorm, x, cond)
        q = a.q_proj(h).view(b, s, a.num_heads, a.head_dim).transpose(1, 2)
        k = a.k_proj(h).view(b, s, a.num_kv_heads, a.head_dim).transpose(1, 2)
        v = a.v_proj(h).view(b, s, a.num_kv_heads, a.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, x: Tensor, attn: Tensor, cond: Tensor | None = None) -> Tensor:
        """attn [B, S, H*D] -> residual, post-attention norm, MLP, residual (gated when the norms are adaptive)."""
        x = _gated(x, self.self_attn.o_proj(attn), self.input_layernorm, cond)
        return _gated(x, self.mlp(_norm(self.post_attention_layernorm, x, cond)), self.post_attention_layernorm, cond)


def _make_norm(cfg: GemmaConfig, cond_dim: int | None) -> nn.Module:
    return RMSNorm(cfg.width, cfg.rms_eps) if cond_dim is None else AdaRMSNorm(cfg.width, cond_dim, cfg.rms_eps)


class GemmaModel(nn.Module):
    """Layers + final norm; the VLM also owns the token embedding (the expert has none)."""

    def __init__(self, cfg: GemmaConfig, vocab_size: int | None, cond_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, cfg.width)
        self.layers = nn.ModuleList(GemmaDecoderLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = _make_norm(cfg, cond_dim)


class TiedLMHead(nn.Module):
    """Holds the embedding matrix under the key `lm_head.weight` (stored that way on the hub); pi0 never calls it."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class MultiModalProjector(nn.Module):
    def __init__(self, vision_width: int, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(vision_width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class PaliGemmaModel(nn.Module):
    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.vision_tower = SiglipVisionTower(cfg.vision)
        self.multi_modal_projector = MultiModalProjector(cfg.vision.width, cfg.paligemma.width)
        self.language_model = GemmaModel(cfg.paligemma, cfg.vocab_size)


class PaliGemma(nn.Module):
    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.model = PaliGemmaModel(cfg)
        self.lm_head = TiedLMHead(self.model.language_model.embed_tokens.weight)


class GemmaExpert(nn.Module):
    """The action expert. The hub file also stores an unused `gemma_expert.lm_head` (263 M params): not built."""

    def __init__(self, cfg: GemmaConfig, cond_dim: int | None = None) -> None:
        super().__init__()
        self.model = GemmaModel(cfg, vocab_size=None, cond_dim=cond_dim)


@dataclass(frozen=True)
class AttentionInputs:
    """Per-call attention constants, built once (not per layer, not per denoising step)."""

    bias: Tensor | None  # [B, 1, g*Sq, Sk] additive mask (0 or MASK_VALUE), repeated for the g query heads per KV head
    cos: Tensor  # [B, 1, Sq, D] fp32
    sin: Tensor
    block_mask: Any = None  # FlexAttention BlockMask (attention="flex"); then bias is None


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.paligemma = PaliGemma(cfg)
        # pi0.5: the expert's norms are conditioned on the time MLP's output (expert width)
        self.gemma_expert = GemmaExpert(cfg.expert, cond_dim=cfg.expert.width if cfg.pi05 else None)
        self.gradient_checkpointing = False

    def attention_inputs(self, mask: Tensor, positions: Tensor, dtype: torch.dtype) -> AttentionInputs:
        """mask [B, Sq, Sk] bool (True = may attend), positions [B, Sq] of the queries."""
        g = self.cfg.paligemma
        cos, sin = rope_cos_sin(positions, g.head_dim, g.rope_theta)
        if self.cfg.attention == "flex":
            return AttentionInputs(bias=None, cos=cos, sin=sin, block_mask=flex_block_mask(mask))
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, MASK_VALUE)
        bias = bias[:, None].repeat(1, 1, g.num_heads // g.num_kv_heads, 1)  # rows of the folded query heads
        return AttentionInputs(bias=bias, cos=cos, sin=sin)

    def forward(
        self,
        prefix: Tensor | None,
        suffix: Tensor | None,
        attn: AttentionInputs,
        kv_cache: KVCache | None = None,
        return_kv: bool = False,
        kv_write_at: int | None = None,
        prefix_out: bool = True,
        suffix_cond: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None, KVCache | None]:
        """Runs prefix tokens through the VLM weights and suffix tokens through the expert weights, one shared
        attention per layer. Returns the final-normed outputs of each group and, if asked, the new K/V.

        kv_cache: per-layer (K, V) the queries also attend to, placed before the new tokens. With kv_write_at=n
        the cache tensors are buffers whose first n positions hold the cached K/V and whose tail has room for
        the new tokens: their K/V are written there in place (inference only) instead of concatenating a copy
        of the whole cache every layer and every denoising step.

        prefix_out=False (training): the prefix's output is not wanted, so the last layer's prefix o_proj/MLP and
        the VLM's final norm are skipped (nothing downstream reads them: ~5% of the prefix compute, and no
        parameters without gradients for DDP). The prefix output is then None.

        suffix_cond (pi0.5): the adaptive norms' condition for the suffix group ([B, C] or [B, S, C])."""
        skip_last = not prefix_out and prefix is not None
        stacks = (self.paligemma.model.language_model, self.gemma_expert.model)
        groups = [(x, m) for x, m in zip((prefix, suffix), stacks) if x is not None]
        if (suffix_cond is not None) != (suffix is not None and self.cfg.pi05):
            raise ValueError("pi0.5's expert needs suffix_cond with its suffix (and pi0's takes none)")
        if not groups:
            raise ValueError("need a prefix, a suffix or both")
        hs = [x for x, _ in groups]
        lens = [x.shape[1] for x in hs]
        new_kv: KVCache = []
        which = tuple(w for w, x in enumerate((prefix, suffix)) if x is not None)
        conds = [(None, suffix_cond)[w] for w in which]
        if self.gradient_checkpointing and torch.is_grad_enabled() and kv_cache is None and not return_kv:
            # training: recompute each layer in backward (non-reentrant: safe with DDP and frozen inputs)
            for i in range(self.cfg.paligemma.depth):
                hs = list(checkpoint(self._train_layer, i, attn, which, lens, skip_last, suffix_cond, *hs,
                                     use_reentrant=False))
            return self._final(hs, groups, prefix, suffix, None, skip_last, conds)
        for i in range(self.cfg.paligemma.depth):
            qs, ks, vs = [], [], []
            start = 0
            for h, (_, m), n, c in zip(hs, groups, lens, conds):
                cos, sin = attn.cos[:, :, start:start + n], attn.sin[:, :, start:start + n]
                q, k, v = m.layers[i].qkv(h, cos, sin, c)
                qs.append(q), ks.append(k), vs.append(v)
                start += n
            q, k, v = _cat(qs), _cat(ks), _cat(vs)
            if return_kv:
                new_kv.append((k, v))
            if kv_cache is not None:
                ck, cv = kv_cache[i]
                if kv_write_at is not None:
                    end = kv_write_at + k.shape[2]
                    ck[:, :, kv_write_at:end].copy_(k)
                    cv[:, :, kv_write_at:end].copy_(v)
                    k, v = ck[:, :, :end], cv[:, :, :end]
                else:
                    k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
            out = attend(q, k, v, attn.bias, self.cfg.attention, attn.block_mask)  # [B, Sq, H*D]
            start = 0
            last = i == self.cfg.paligemma.depth - 1
            for j, ((_, m), n, c) in enumerate(zip(groups, lens, conds)):
                if not (skip_last and last and j == 0):
                    hs[j] = m.layers[i].finish(hs[j], out[:, start:start + n], c)
                start += n
        return self._final(hs, groups, prefix, suffix, new_kv if return_kv else None, skip_last, conds)

    def _train_layer(self, i: int, attn: AttentionInputs, which: tuple[int, ...], lens: list[int],
                     skip_last: bool, suffix_cond: Tensor | None, *hs: Tensor) -> tuple[Tensor, ...]:
        """Layer i over the present groups (which: 0 = prefix/VLM, 1 = suffix/expert) without any cache: the
        unit gradient checkpointing recomputes. Same arithmetic as the loop in forward."""
        all_stacks = (self.paligemma.model.language_model, self.gemma_expert.model)
        layers = [all_stacks[w].layers[i] for w in which]
        conds = [(None, suffix_cond)[w] for w in which]
        qs, ks, vs = [], [], []
        start = 0
        for h, layer, n, c in zip(hs, layers, lens, conds):
            q, k, v = layer.qkv(h, attn.cos[:, :, start:start + n], attn.sin[:, :, start:start + n], c)
            qs.append(q), ks.append(k), vs.append(v)
            start += n
        out = attend(_cat(qs), _cat(ks), _cat(vs), attn.bias, self.cfg.attention, attn.block_mask)
        res, start = [], 0
        last = i == self.cfg.paligemma.depth - 1
        for j, (h, layer, n, c) in enumerate(zip(hs, layers, lens, conds)):
            res.append(h if (skip_last and last and j == 0) else layer.finish(h, out[:, start:start + n], c))
            start += n
        return tuple(res)

    @staticmethod
    def _final(hs: list[Tensor], groups: list, prefix: Tensor | None, suffix: Tensor | None,
               kv: KVCache | None, skip_prefix: bool = False, conds: Sequence[Tensor | None] = ()
               ) -> tuple[Tensor | None, Tensor | None, KVCache | None]:
        conds = list(conds) or [None] * len(groups)
        outs = [None if (skip_prefix and j == 0) else _norm(m.norm, h, c)
                for j, (h, (_, m), c) in enumerate(zip(hs, groups, conds))]
        it = iter(outs)
        prefix_out = next(it) if prefix is not None else None
        suffix_out = next(it) if suffix is not None else None
        return prefix_out, suffix_out, kv


def _cat(xs: Sequence[Tensor]) -> Tensor:
    return xs[0] if len(xs) == 1 else torch.cat(list(xs), dim=2)


_FLEX: dict[str, Any] = {}


def _flex_attention(device_type: str) -> Any:
    """flex_attention, compiled on CUDA (its eager form materializes the scores and has no CPU backward: on the
    CPU "flex" serves inference and tests only)."""
    if device_type not in _FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX[device_type] = torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention
    return _FLEX[device_type]


def unused_in_training(cfg: Pi0Config) -> tuple[str, ...]:
    """Name prefixes of the weights pi0's loss never reaches: the last VLM layer after its K/V (o_proj,
    post-attention norm, MLP) and the VLM's final norm. Trainers freeze them (DDP needs every trainable
    parameter to get a gradient); serving skips them too."""
    last = f"paligemma_with_expert.paligemma.model.language_model.layers.{cfg.paligemma.depth - 1}."
    return (last + "self_attn.o_proj.", last + "post_attention_layernorm.", last + "mlp.",
            "paligemma_with_expert.paligemma.model.language_model.norm.")


def flex_block_mask(mask: Tensor) -> Any:
    """FlexAttention BlockMask from pi0's boolean prefix-LM mask [B, Sq, Sk] (True = may attend): blocks that
    are entirely masked (prefix queries against the suffix, padding) are skipped instead of computed."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, sq, sk = mask.shape
    dense = mask.contiguous()

    def mask_mod(bi: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        return dense[bi, qi, ki]

    return create_block_mask(mask_mod, B=b, H=None, Q_LEN=sq, KV_LEN=sk, device=mask.device)


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, impl: str = "sdpa",
           block_mask: Any = None) -> Tensor:
    """Grouped/multi-query attention without copying K/V per head.

    q [B, H, Sq, D], k/v [B, KV, Sk, D]; query head i uses KV head i // (H / KV) (the usual repeat_kv order).
    The H/KV query heads of a group are folded into the query sequence, [B, KV, g*Sq, D], so K/V are read once
    and the kernels see plain multi-head shapes. bias is the folded mask [B, 1, g*Sq, Sk] from
    `AttentionInputs`. "sdpa": torch's fused kernels (fp32 accumulation of logits and softmax on CUDA);
    "eager": explicit fp32 logits and softmax. Returns [B, Sq, H*D]."""
    b, h, sq, d = q.shape
    kvh = k.shape[1]
    if impl == "flex":
        out = _flex_attention(q.device.type)(q, k, v, block_mask=block_mask, enable_gqa=kvh != h)
        return out.transpose(1, 2).reshape(b, sq, h * d)
    qg = q.reshape(b, kvh, (h // kvh) * sq, d)
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=bias)
    else:
        logits = torch.matmul(qg.float(), k.float().transpose(-1, -2)) * (d ** -0.5) + bias.float()
        out = torch.matmul(torch.softmax(logits, dim=-1).to(v.dtype), v)
    return out.reshape(b, h, sq, d).transpose(1, 2).reshape(b, sq, h * d)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions [B, S] (int) -> cos, sin [B, 1, S, head_dim] in fp32 (rotate-half layout)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def text_embedding_scale(width: int) -> float:
    """Gemma multiplies text embeddings by sqrt(width); image tokens are not scaled."""
    return math.sqrt(width)
