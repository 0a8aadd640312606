"""pi0: PaliGemma (SigLIP + Gemma 2B) prefix, Gemma 300M action expert suffix, flow matching.

Conventions follow the public ports (openpi, LeRobot): t = 1 is noise, t = 0 is data; x_t = t*eps + (1-t)*a;
the network predicts u = eps - a; sampling integrates 10 Euler steps from t = 1 with dt = -1/10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.model_config import Pi0Config
from finetune.model.gemma import AttentionInputs, KVCache, PaliGemmaWithExpert, text_embedding_scale
from finetune.model.rtc import DEFAULT_MAX_GUIDANCE, check_prefix, guidance_weight, prefix_weights

# Parameters kept in fp32 when the model runs in bf16 (openpi's selection): Gemma RMSNorm weights and the
# vision patch/position embeddings.
FP32_PARAM_MARKERS = (
    "input_layernorm.",
    "post_attention_layernorm.",
    "language_model.norm.",
    "gemma_expert.model.norm.",
    "embeddings.patch_embedding.",
    "embeddings.position_embedding.",
)


def torch_dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def param_dtype(param_name: str, compute_dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of one parameter under pi0's mixed-precision policy."""
    return torch.float32 if any(m in param_name for m in FP32_PARAM_MARKERS) else compute_dtype


@dataclass(frozen=True)
class Observation:
    """One batch of model inputs, already preprocessed.

    images: camera name -> [B, 3, H, W] float in [-1, 1] (H = W = the vision image size);
    image_masks: camera name -> [B] bool (False = camera missing; its tokens are not attended);
    tokens / token_mask: [B, L] int64 / bool (right-padded prompt);
    state: [B, state_dim] float (zero-padded to 32).
    Cameras the config names but the observation lacks are treated as missing.
    """

    images: Mapping[str, Tensor]
    image_masks: Mapping[str, Tensor]
    tokens: Tensor
    token_mask: Tensor
    state: Tensor

    @property
    def batch_size(self) -> int:
        return self.state.shape[0]

    def to(self, device: torch.device | str) -> "Observation":
        return Observation(
            images={k: v.to(device) for k, v in self.images.items()},
            image_masks={k: v.to(device) for k, v in self.image_masks.items()},
            tokens=self.tokens.to(device),
            token_mask=self.token_mask.to(device),
            state=self.state.to(device),
        )


@dataclass(frozen=True)
class PrefixCache:
    """What the denoising steps read: every layer's prefix K/V (after RoPE) and which prefix tokens are valid.

    kv holds per-layer buffers [B, KV, P + suffix_len, D]: positions < P are the prefix (written once by
    prefill); each denoising step writes its suffix K/V into the tail in place."""

    kv: KVCache
    prefix_pad: Tensor  # [B, P] bool

    @property
    def prefix_len(self) -> int:
        return self.prefix_pad.shape[1]


def make_attention_mask(pad: Tensor, ar: Tensor) -> Tensor:
    """Block-wise mask. pad [B, S] bool, ar [S] or [B, S] int (1 = starts a new block).

    Token i may attend to token j iff cumsum(ar)[j] <= cumsum(ar)[i] and both are valid."""
    cum = torch.cumsum(ar.long(), dim=-1)
    causal_blocks = cum[..., None, :] <= cum[..., :, None]
    return causal_blocks & pad[:, None, :] & pad[:, :, None]


def flow_time_embedding(t: Tensor, width: int, min_period: float, max_period: float) -> Tensor:
    """Fixed sinusoid of the flow time: [B] -> [B, width] fp32 (or per token: [B, H] -> [B, H, width]); periods
    log-spaced from min to max."""
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.to(torch.float64)[..., None] * (2.0 * math.pi / period)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


def sample_flow_time(batch: int, device: torch.device | str, generator: torch.Generator | None = None) -> Tensor:
    """t = Beta(1.5, 1) * 0.999 + 0.001 (more weight near the noisy end). Beta(1.5, 1) has CDF x^1.5, so it is
    drawn by inverse CDF from one uniform (seedable with a generator, unlike torch.distributions.Beta)."""
    u = torch.rand(batch, device=device, generator=generator)
    return u.pow(1.0 / 1.5) * 0.999 + 0.001


class Pi0(nn.Module):
    def __init__(self, config: Pi0Config) -> None:
        super().__init__()
        if config.pi05:
            raise ValueError(f"{config.name!r} is a pi0.5 config: build it with finetune.model.Pi05 (or model_class)")
        self.config = config
        self.paligemma_with_expert = PaliGemmaWithExpert(config)
        w = config.expert.width
        self.state_proj = nn.Linear(config.state_dim, w)
        self.action_in_proj = nn.Linear(config.action_dim, w)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.action_out_proj = nn.Linear(w, config.action_dim)

    # ----- training switches -----
    def set_gradient_checkpointing(self, enabled: bool = True) -> "Pi0":
        """Recompute each transformer layer (Gemma pair and SigLIP) in the backward pass instead of storing its
        activations: ~1/3 more compute, activations from ~100 GB to ~10 GB at batch 32 (pi0-gpu.md 2.2)."""
        self.paligemma_with_expert.gradient_checkpointing = enabled
        self.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.gradient_checkpointing = enabled
        return self

    # ----- precision -----
    @property
    def compute_dtype(self) -> torch.dtype:
        return torch_dtype(self.config.dtype)

    def apply_precision(self) -> "Pi0":
        """Casts parameters in place to the mixed-precision policy (ties survive: Parameter objects are kept)."""
        for name, p in self.named_parameters():
            p.data = p.data.to(param_dtype(name, self.compute_dtype))
        return self

    # ----- prefix -----
    def embed_images(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """All cameras through SigLIP + projector in one batch -> tokens [B, n*N, W], valid [B, n*N]."""
        cfg = self.config
        pal = self.paligemma_with_expert.paligemma.model
        unknown = set(obs.images) - set(cfg.camera_names)
        if unknown:
            raise ValueError(f"observation has cameras {sorted(unknown)} that the model has no slot for; "
                             f"slots: {list(cfg.camera_names)}")
        b = obs.batch_size
        size = cfg.vision.image_size
        device = obs.state.device
        imgs, masks = [], []
        for name in cfg.camera_names:
            img = obs.images.get(name)
            if img is None:
                imgs.append(torch.zeros(b, 3, size, size, device=device))
                masks.append(torch.zeros(b, dtype=torch.bool, device=device))
                continue
            if tuple(img.shape[1:]) != (3, size, size):
                raise ValueError(f"camera {name!r}: expected [B, 3, {size}, {size}] images, got {list(img.shape)}")
            imgs.append(img)
            m = obs.image_masks.get(name)
            masks.append(torch.ones(b, dtype=torch.bool, device=device) if m is None else m.to(torch.bool))
        n = len(imgs)
        pixels = torch.stack(imgs).flatten(0, 1)  # [n*B, 3, H, W]
        emb = pal.multi_modal_projector(pal.vision_tower(pixels))  # [n*B, N, W]
        tokens = emb.shape[1]
        emb = emb.view(n, b, tokens, -1).transpose(0, 1).reshape(b, n * tokens, -1)
        valid = torch.stack(masks, dim=1)[:, :, None].expand(b, n, tokens).reshape(b, n * tokens)
        return emb, valid

    def embed_prefix(self, obs: Observation, image_embeddings: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, Tensor]:
        """Images then prompt -> embeddings [B, P, W] and valid mask [B, P]; the whole prefix is one block."""
        img, img_valid = image_embeddings if image_embeddings is not None else self.embed_images(obs)
        lm = self.paligemma_with_expert.paligemma.model.language_model
        lang = lm.embed_tokens(obs.tokens) * text_embedding_scale(lm.cfg.width)
        embs = torch.cat([img, lang.to(img.dtype)], dim=1)
        return embs, torch.cat([img_valid, obs.token_mask.to(torch.bool)], dim=1)

    # ----- suffix -----
    def embed_state(self, state: Tensor) -> Tensor:
        return self.state_proj(state.to(self.state_proj.weight.dtype))

    def embed_suffix(self, state_emb: Tensor, x_t: Tensor, time_emb: Tensor) -> Tensor:
        """[state token, 50 action tokens]: actions are mixed with the time embedding by the action-time MLP.

        time_emb: [B, W] (one flow time per sample, broadcast over the chunk) or [B, H, W] (one per action token:
        training-time RTC gives the committed prefix tokens t = 0)."""
        dtype = self.action_in_proj.weight.dtype
        a = self.action_in_proj(x_t.to(dtype))
        te = time_emb.to(dtype)
        te = te[:, None, :].expand_as(a) if te.ndim == 2 else te.expand_as(a)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a, te], dim=-1))))
        return torch.cat([state_emb[:, None, :].to(h.dtype), h], dim=1)

    def suffix_inputs(self, state_emb: Tensor | None, x_t: Tensor, time_emb: Tensor) -> tuple[Tensor, Tensor | None]:
        """The suffix tokens and the expert's norm condition (pi0: none; pi0.5 overrides this): the one place
        every forward (training, the samplers, RTC) builds the suffix."""
        return self.embed_suffix(state_emb, x_t, time_emb), None

    def suffix_ar(self, device: torch.device) -> Tensor:
        ar = torch.zeros(self.config.suffix_len, dtype=torch.long, device=device)
        ar[:2] = 1  # state token starts a block, the first action token starts the next
        return ar

    def time_embedding(self, t: Tensor) -> Tensor:
        c = self.config
        return flow_time_embedding(t, c.expert.width, c.time_min_period, c.time_max_period)

    def velocity_out(self, suffix_out: Tensor) -> Tensor:
        h = suffix_out[:, -self.config.action_horizon:]
        return self.action_out_proj(h.to(self.action_out_proj.weight.dtype)).float()

    # ----- full forward (training, and the no-cache reference sampler) -----
    def full_attention_mask(self, prefix_pad: Tensor) -> tuple[Tensor, Tensor]:
        """Mask [B, P+S, P+S] and RoPE positions [B, P+S] for prefix + suffix (positions skip padding)."""
        b, device = prefix_pad.shape[0], prefix_pad.device
        pad = torch.cat([prefix_pad, torch.ones(b, self.config.suffix_len, dtype=torch.bool, device=device)], dim=1)
        ar = torch.cat([torch.zeros(prefix_pad.shape[1], dtype=torch.long, device=device), self.suffix_ar(device)])
        return make_attention_mask(pad, ar), torch.cumsum(pad.long(), dim=1) - 1

    def velocity(self, prefix_embs: Tensor, prefix_pad: Tensor, state_emb: Tensor, x_t: Tensor,
                 time_emb: Tensor) -> Tensor:
        """Prefix and suffix together through the shared-attention transformer -> v [B, H, A] fp32."""
        suffix, cond = self.suffix_inputs(state_emb, x_t, time_emb)
        mask, positions = self.full_attention_mask(prefix_pad)
        pwe = self.paligemma_with_expert
        attn = pwe.attention_inputs(mask, positions, prefix_embs.dtype)
        _, suffix_out, _ = pwe(prefix_embs, suffix, attn, prefix_out=False, suffix_cond=cond)
        return self.velocity_out(suffix_out)

    def compute_loss(self, obs: Observation, actions: Tensor, noise: Tensor | None = None,
                     time: Tensor | None = None, reduction: str = "mean",
                     action_is_pad: Tensor | None = None, delay: Tensor | None = None) -> Tensor:
        """Flow-matching MSE. actions [B, H, A] (normalized, zero-padded). reduction "none" -> [B, H, A].

        action_is_pad [B, H] bool: chunk steps past the episode end. Their error is zeroed and the mean still
        divides by B*H*A (LeRobot's convention): every sample weighs the same whatever its padding, so the mean
        of per-rank means under DDP equals the mean over the combined batch exactly.

        delay [B] int (training-time RTC, Black et al. 2025, arXiv 2512.05964): the first delay[b] action tokens
        of sample b are given clean (flow time 0 per token, so x equals the actions there) and their error is
        zeroed like padding. None: the per-sample path (one flow time per sample), bit for bit the old one."""
        b, h = actions.shape[:2]
        actions = actions.float()
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            time = sample_flow_time(b, actions.device)
        clean = None
        if delay is None:
            t = time.float()[:, None, None]
            time_emb = self.time_embedding(time)
        else:
            clean = torch.arange(h, device=actions.device)[None] < delay.to(actions.device).long()[:, None]
            t_tok = time.float()[:, None].expand(b, h).masked_fill(clean, 0.0)  # [B, H]
            t = t_tok[..., None]
            time_emb = self.time_embedding(t_tok)  # [B, H, W]
        x_t = t * noise + (1.0 - t) * actions
        u = noise - actions
        prefix_embs, prefix_pad = self.embed_prefix(obs)
        v = self.velocity(prefix_embs, prefix_pad, self.embed_state(obs.state), x_t, time_emb)
        loss = (v - u).pow(2)
        if action_is_pad is not None:
            loss = loss * (~action_is_pad.to(torch.bool))[..., None].to(loss.dtype)
        if clean is not None:
            loss = loss * (~clean)[..., None].to(loss.dtype)
        if reduction == "none":
            return loss
        if self.config.loss_action_dims is not None:
            loss = loss[..., : self.config.loss_action_dims]
        return loss.mean()

    # ----- inference -----
    @torch.no_grad()
    def prefill(self, obs: Observation, image_embeddings: tuple[Tensor, Tensor] | None = None) -> PrefixCache:
        """Runs the prefix once through the VLM weights and keeps every layer's K/V."""
        embs, pad = self.embed_prefix(obs, image_embeddings)
        mask = make_attention_mask(pad, torch.zeros(pad.shape[1], dtype=torch.long, device=pad.device))
        positions = torch.cumsum(pad.long(), dim=1) - 1
        pwe = self.paligemma_with_expert
        _, _, kv = pwe(embs, None, pwe.attention_inputs(mask, positions, embs.dtype), return_kv=True)
        p, s = pad.shape[1], self.config.suffix_len
        buffers = []
        for k, v in kv:
            kb = k.new_empty(k.shape[0], k.shape[1], p + s, k.shape[3])
            vb = v.new_empty(kb.shape)
            kb[:, :, :p].copy_(k)
            vb[:, :, :p].copy_(v)
            buffers.append((kb, vb))
        return PrefixCache(kv=buffers, prefix_pad=pad)

    def suffix_attention(self, cache: PrefixCache, b: int, device: torch.device) -> AttentionInputs:
        """Mask, positions and RoPE tables of the suffix attending to the cached prefix (built once per chunk)."""
        s = self.config.suffix_len
        pad = cache.prefix_pad
        suffix_block = make_attention_mask(torch.ones(b, s, dtype=torch.bool, device=device), self.suffix_ar(device))
        mask = torch.cat([pad[:, None, :].expand(b, s, pad.shape[1]), suffix_block], dim=2)
        positions = pad.long().sum(dim=1, keepdim=True) + torch.arange(s, device=device)[None]
        return self.paligemma_with_expert.attention_inputs(mask, positions, cache.kv[0][0].dtype)

    @torch.no_grad()
    def denoise(self, cache: PrefixCache, state: Tensor, noise: Tensor, num_steps: int | None = None) -> Tensor:
        """Euler integration from t = 1 to 0. Each step runs only the suffix (state + actions) against the cached
        prefix K/V; masks, positions, RoPE tables and time embeddings are built once before the loop."""
        n = num_steps or self.config.num_steps
        b = noise.shape[0]
        device = noise.device
        pwe = self.paligemma_with_expert
        attn = self.suffix_attention(cache, b, device)
        dt = -1.0 / n
        times = 1.0 + dt * torch.arange(n, device=device, dtype=torch.float32)
        time_embs = self.time_embedding(times)  # [n, W]
        state_emb = self.embed_state(state)
        x = noise.float()
        for i in range(n):
            suffix, cond = self.suffix_inputs(state_emb, x, time_embs[i].expand(b, -1))
            _, out, _ = pwe(None, suffix, attn, kv_cache=cache.kv, kv_write_at=cache.prefix_len, suffix_cond=cond)
            x = x + dt * self.velocity_out(out)
        return x

    def _rtc_prefix(self, noise: Tensor, prefix: Tensor) -> Tensor:
        prefix = prefix.to(noise.device).float()
        if prefix.ndim == 2:
            prefix = prefix[None]
        if prefix.shape[1:] != noise.shape[1:] or prefix.shape[0] not in (1, noise.shape[0]):
            raise ValueError(f"RTC prefix must be [B, {noise.shape[1]}, {noise.shape[2]}] in model space (padded to "
                             f"the horizon), got {list(prefix.shape)}")
        if not torch.isfinite(prefix).all():
            raise ValueError("RTC prefix has non-finite values")
        return prefix.expand_as(noise)

    @torch.no_grad()
    def denoise_guided(self, cache: PrefixCache, state: Tensor, noise: Tensor, prefix: Tensor, delay: int,
                       prefix_len: int, num_steps: int | None = None, max_guidance: float = DEFAULT_MAX_GUIDANCE,
                       weights: Tensor | None = None) -> Tensor:
        """Inference-time real-time chunking (Black, Galliker, Levine 2025): Euler integration like `denoise`, with
        each step's velocity corrected by PiGDM guidance towards `prefix` (model space [B or 1, H, A], the current
        chunk's not-yet-executed actions, padded to H) under the soft mask W (finetune.model.rtc: 1 on the first
        `delay` steps, decaying to `prefix_len`, 0 after; or `weights` [H] / [B, H] given directly).

        The guidance is a vector-Jacobian product through the suffix network (the prefix K/V are read, detached,
        and not written: the in-place cache writes of `denoise` would tie successive steps' graphs together), so
        a step costs about 2-3 plain ones. Formulas in our t convention: finetune/model/rtc.py."""
        n = num_steps or self.config.num_steps
        b, h = noise.shape[:2]
        device = noise.device
        prefix = self._rtc_prefix(noise, prefix)
        if weights is None:
            weights = prefix_weights(h, delay, prefix_len, device)
        w_mask = weights.to(device).float()
        w_mask = (w_mask[None] if w_mask.ndim == 1 else w_mask)[..., None]  # [B or 1, H, 1]
        pwe = self.paligemma_with_expert
        attn = self.suffix_attention(cache, b, device)
        p = cache.prefix_len
        kv = [(k[:, :, :p].detach(), v[:, :, :p].detach()) for k, v in cache.kv]
        dt = -1.0 / n
        times = 1.0 + dt * torch.arange(n, device=device, dtype=torch.float32)
        time_embs = self.time_embedding(times)
        state_emb = self.embed_state(state)
        x = noise.float()
        for i in range(n):
            t = float(times[i])
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                suffix, cond = self.suffix_inputs(state_emb, xg, time_embs[i].expand(b, -1))
                _, out, _ = pwe(None, suffix, attn, kv_cache=kv, suffix_cond=cond)
                v = self.velocity_out(out)
                a1 = xg - t * v  # the predicted clean chunk
                (g,) = torch.autograd.grad(a1, xg, grad_outputs=(prefix - a1.detach()) * w_mask)
            x = x + dt * (v.detach() - guidance_weight(t, max_guidance) * g)
        return x

    @torch.no_grad()
    def denoise_conditioned(self, cache: PrefixCache, state: Tensor, noise: Tensor, prefix: Tensor, delay: int,
                            num_steps: int | None = None) -> Tensor:
        """Training-time real-time chunking (Black et al., Dec 2025): the first `delay` action tokens are the
        committed prefix (model space [B or 1, H, A]), given clean (flow time 0 per token) at every step and in the
        output; the rest is denoised as in `denoise`. For policies trained with `rtc_max_delay > 0`; no guidance,
        so it costs what a plain chunk does."""
        n = num_steps or self.config.num_steps
        b, h = noise.shape[:2]
        device = noise.device
        prefix = self._rtc_prefix(noise, prefix)
        check_prefix(h, delay, h)
        clean = (torch.arange(h, device=device) < delay)[None, :, None]  # [1, H, 1]
        pwe = self.paligemma_with_expert
        attn = self.suffix_attention(cache, b, device)
        dt = -1.0 / n
        times = 1.0 + dt * torch.arange(n, device=device, dtype=torch.float32)
        t_tok = times[:, None].expand(n, h).masked_fill(clean[0, :, 0][None], 0.0)  # [n, H]
        time_embs = self.time_embedding(t_tok)  # [n, H, W]
        state_emb = self.embed_state(state)
        x = torch.where(clean, prefix, noise.float())
        for i in range(n):
            suffix, cond = self.suffix_inputs(state_emb, x, time_embs[i][None].expand(b, -1, -1))
            _, out, _ = pwe(None, suffix, attn, kv_cache=cache.kv, kv_write_at=cache.prefix_len, suffix_cond=cond)
            x = torch.where(clean, prefix, x + dt * self.velocity_out(out))
        return x

    @torch.no_grad()
    def sample_actions(self, obs: Observation, noise: Tensor | None = None, num_steps: int | None = None,
                       use_cache: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """-> actions [B, H, action_dim] fp32 (normalized model space; callers crop the real dims).

        use_cache=False recomputes prefix + suffix every step (the reference the cached path is tested against)."""
        c = self.config
        b = obs.batch_size
        if noise is None:
            noise = torch.randn(b, c.action_horizon, c.action_dim, device=obs.state.device, generator=generator)
        if use_cache:
            return self.denoise(self.prefill(obs), obs.state, noise, num_steps)
        n = num_steps or c.num_steps
        dt = -1.0 / n
        prefix_embs, prefix_pad = self.embed_prefix(obs)
        state_emb = self.embed_state(obs.state)
        x = noise.float()
        for i in range(n):
            t = torch.full((b,), 1.0 + dt * i, device=x.device)
            x = x + dt * self.velocity(prefix_embs, prefix_pad, state_emb, x, self.time_embedding(t))
        return x


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied weight counts once, as it is stored once)."""
    return sum(p.numel() for p in model.parameters())


def random_observation(config: Pi0Config, batch: int = 1, device: torch.device | str = "cpu",
                       generator: torch.Generator | None = None, prompt_len: int = 12) -> Observation:
    """A well-formed observation with random content (benchmarks and tests)."""
    size = config.vision.image_size
    images = {n: torch.rand(batch, 3, size, size, generator=generator).mul_(2).sub_(1) for n in config.camera_names}
    tokens = torch.randint(1, config.vocab_size, (batch, config.max_token_len), generator=generator)
    token_mask = torch.arange(config.max_token_len)[None].expand(batch, -1) < prompt_len
    tokens = tokens * token_mask
    obs = Observation(
        images=images,
        image_masks={n: torch.ones(batch, dtype=torch.bool) for n in config.camera_names},
        tokens=tokens,
        token_mask=token_mask,
        state=torch.randn(batch, config.state_dim, generator=generator),
    )
    return obs.to(device)


__all__ = [
    "Pi0", "Observation", "PrefixCache", "make_attention_mask", "flow_time_embedding", "sample_flow_time",
    "param_dtype", "count_parameters", "random_observation",
]
