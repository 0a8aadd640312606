"""pi0.5 against an independent implementation: a plain-torch forward written here from the reference notes
(pi0.md + pi05.md), reading the weights by their hub key names and calling none of our modules. A shallow
configuration (pi05_tiny: 2 layers) in fp32, random weights including the adaptive norms' modulation.

Checked: the flow-matching loss for fixed noise and time, and the sampled chunk for fixed noise (our cached
prefix-K/V sampler against the reference's full recompute at every Euler step)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pi0_helpers import PREFIX, tiny_obs
from pi05_helpers import tiny_pi05

P = PREFIX + "paligemma."
NEG = -1e30  # masked logit (finite, so fully masked padding rows stay finite)


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * w + b


def rms(x):
    return x * torch.rsqrt((x ** 2).mean(-1, keepdim=True) + 1e-6)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def lin(W, pre, x, bias=True):
    return x @ W[pre + ".weight"].T + (W[pre + ".bias"] if bias else 0)


def siglip(W, cfg, pixels):
    v = cfg.vision
    pre = P + "model.vision_tower.vision_model."
    x = F.conv2d(pixels, W[pre + "embeddings.patch_embedding.weight"], W[pre + "embeddings.patch_embedding.bias"],
                 stride=v.patch_size)
    x = x.flatten(2).transpose(1, 2) + W[pre + "embeddings.position_embedding.weight"]
    n, s, w = x.shape
    hd = w // v.num_heads
    for i in range(v.depth):
        lp = f"{pre}encoder.layers.{i}."
        h = layer_norm(x, W[lp + "layer_norm1.weight"], W[lp + "layer_norm1.bias"])
        q, k, vv = (lin(W, lp + f"self_attn.{p}_proj", h).view(n, s, v.num_heads, hd).transpose(1, 2)
                    for p in "qkv")
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ vv
        x = x + lin(W, lp + "self_attn.out_proj", a.transpose(1, 2).reshape(n, s, w))
        h = layer_norm(x, W[lp + "layer_norm2.weight"], W[lp + "layer_norm2.bias"])
        x = x + lin(W, lp + "mlp.fc2", gelu_tanh(lin(W, lp + "mlp.fc1", h)))
    return layer_norm(x, W[pre + "post_layernorm.weight"], W[pre + "post_layernorm.bias"])


def rope(x, pos, theta=10000.0):
    """x [B, S, H, D], pos [B, S]: rotate-half RoPE."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos.double()[..., None] * inv  # [B, S, D/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, :, None].float(), torch.cat([ang.sin()] * 2, -1)[:, :, None].float()
    rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def sincos(t, width):
    frac = torch.linspace(0, 1, width // 2, dtype=torch.float64)
    period = 4e-3 * (4.0 / 4e-3) ** frac
    ang = t.double()[:, None] * 2 * math.pi / period
    return torch.cat([ang.sin(), ang.cos()], -1).float()


def reference_velocity(W, cfg, obs, x_t, t):
    """v(x_t, t) [B, 50, 32] of pi0.5, prefix and suffix in one pass."""
    b = x_t.shape[0]
    # prefix: every camera's SigLIP tokens through the projector, then the scaled text embeddings
    embs, valid = [], []
    for cam in cfg.camera_names:
        img = lin(W, P + "model.multi_modal_projector.linear", siglip(W, cfg, obs.images[cam]))
        embs.append(img)
        valid.append(obs.image_masks[cam][:, None].expand(b, img.shape[1]))
    emb_table = W[P + "lm_head.weight"]  # tied: embed_tokens = lm_head
    embs.append(emb_table[obs.tokens] * math.sqrt(cfg.paligemma.width))
    valid.append(obs.token_mask)
    prefix, pvalid = torch.cat(embs, 1), torch.cat(valid, 1)
    # suffix: 50 action tokens; the time goes through the time MLP into the adaptive norms' condition
    suffix = lin(W, "action_in_proj", x_t)
    cond = F.silu(lin(W, "time_mlp_out", F.silu(lin(W, "time_mlp_in", sincos(t, cfg.expert.width)))))[:, None]
    np_, ns = prefix.shape[1], suffix.shape[1]
    pad = torch.cat([pvalid, torch.ones(b, ns, dtype=torch.bool)], 1)
    ar = torch.zeros(np_ + ns, dtype=torch.long)
    ar[np_] = 1
    cum = ar.cumsum(0)
    mask = (cum[None, :] <= cum[:, None])[None] & pad[:, None, :] & pad[:, :, None]
    pos = pad.long().cumsum(1) - 1

    def ada(x, key):
        scale, shift, gate = lin(W, key + ".dense", cond).chunk(3, -1)
        return rms(x) * (1 + scale) + shift, gate

    vlm, exp = P + "model.language_model.", PREFIX + "gemma_expert.model."
    H, KV, D = cfg.paligemma.num_heads, cfg.paligemma.num_kv_heads, cfg.paligemma.head_dim
    xs = [prefix, suffix]
    for i in range(cfg.paligemma.depth):
        lv, le = f"{vlm}layers.{i}.", f"{exp}layers.{i}."
        hp = rms(xs[0]) * (1 + W[lv + "input_layernorm.weight"])
        hs, gate_attn = ada(xs[1], le + "input_layernorm")
        qs, ks, vs = [], [], []
        for h, lp in ((hp, lv), (hs, le)):
            s = h.shape[1]
            qs.append(lin(W, lp + "self_attn.q_proj", h, False).view(b, s, H, D))
            ks.append(lin(W, lp + "self_attn.k_proj", h, False).view(b, s, KV, D))
            vs.append(lin(W, lp + "self_attn.v_proj", h, False).view(b, s, KV, D))
        q, k, v = rope(torch.cat(qs, 1), pos), rope(torch.cat(ks, 1), pos), torch.cat(vs, 1)
        k, v = k.repeat_interleave(H // KV, 2), v.repeat_interleave(H // KV, 2)
        logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * D ** -0.5
        logits = logits.masked_fill(~mask[:, None], NEG)
        out = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(logits, -1), v).reshape(b, np_ + ns, H * D)
        op, os_ = out[:, :np_], out[:, np_:]
        xp = xs[0] + lin(W, lv + "self_attn.o_proj", op, False)
        xe = xs[1] + lin(W, le + "self_attn.o_proj", os_, False) * gate_attn

        def mlp(lp, h):
            return lin(W, lp + "mlp.down_proj", gelu_tanh(lin(W, lp + "mlp.gate_proj", h, False))
                       * lin(W, lp + "mlp.up_proj", h, False), False)

        xp = xp + mlp(lv, rms(xp) * (1 + W[lv + "post_attention_layernorm.weight"]))
        he, gate_mlp = ada(xe, le + "post_attention_layernorm")
        xs = [xp, xe + mlp(le, he) * gate_mlp]
    out, _ = ada(xs[1], exp + "norm")
    return lin(W, "action_out_proj", out)


def test_loss_and_sampled_chunk_agree_with_the_reference():
    torch.manual_seed(0)
    model = tiny_pi05(seed=3, modulation_std=0.3)
    with torch.no_grad():  # non-trivial plain VLM norms too (stored as w in (1 + w))
        for name, p in model.named_parameters():
            if "language_model." in name and name.endswith("norm.weight"):
                p.normal_(0, 0.2)
    cfg = model.config
    obs = tiny_obs(cfg, batch=2, prompt_len=9)
    obs.image_masks["right_wrist_0_rgb"][1] = False  # a missing camera on one sample
    W = {k: v.detach() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(11)
    actions, noise = torch.randn(2, 50, 32, generator=g), torch.randn(2, 50, 32, generator=g)
    time = torch.tensor([0.35, 0.8])
    with torch.no_grad():
        x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
        ref_loss = ((reference_velocity(W, cfg, obs, x_t, time) - (noise - actions)) ** 2).mean()
        loss = model.compute_loss(obs, actions, noise, time)
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
        # the config's Euler steps (pi05_tiny: 20) from t = 1, dt = -1/n, the reference recomputing the whole
        # sequence every step
        n = cfg.num_steps
        x = noise.clone()
        for i in range(n):
            x = x + (-1.0 / n) * reference_velocity(W, cfg, obs, x, torch.full((2,), 1.0 - i / n))
        torch.testing.assert_close(model.sample_actions(obs, noise), x, atol=1e-4, rtol=1e-4)
        assert (x - noise).abs().mean() > 0.1  # the chunk moved: not a trivially equal pair
