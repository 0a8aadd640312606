"""pi0 network: structure, masks, positions, sampler, training signal. Tiny configs, CPU, fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from finetune.checkpoint import build_model, checkpoint_key_shapes
from finetune.model_config import Pi0Config
from finetune.model.gemma import MASK_VALUE
from finetune.model.pi0 import Observation, Pi0, count_parameters, flow_time_embedding, make_attention_mask
from pi0_helpers import PREFIX, numel, reference_hub_keys, tiny_model, tiny_obs

FULL_AS_STORED = 3_501_372_176
FULL_WITHOUT_EXPERT_HEAD = 3_238_048_528


def test_full_size_model_on_meta_has_reference_param_count_and_keys():
    cfg = Pi0Config.variant("pi0")
    model = build_model(cfg, "meta")
    assert all(p.is_meta for p in model.parameters())
    n = count_parameters(model)
    assert n == FULL_WITHOUT_EXPERT_HEAD
    expert_head = cfg.vocab_size * cfg.expert.width  # stored on the hub, never built
    assert n + expert_head == FULL_AS_STORED
    ref = reference_hub_keys(cfg)
    assert numel(ref) == FULL_AS_STORED
    ours = checkpoint_key_shapes(model)
    assert ours == {k: v for k, v in ref.items() if k != PREFIX + "gemma_expert.lm_head.weight"}
    # tied: embed_tokens is the same Parameter as lm_head
    lm = model.paligemma_with_expert.paligemma
    assert lm.lm_head.weight is lm.model.language_model.embed_tokens.weight


def test_variants_share_the_code_path_and_validate():
    for name in Pi0Config.variants():
        cfg = Pi0Config.variant(name)
        assert cfg.action_dim == 32 and cfg.action_horizon == 50
        assert cfg.max_token_len == 48 or cfg.pi05  # pi0.5's prompt is longer (tests/finetune/test_pi05_model.py)
    dummy = Pi0Config.variant("pi0_dummy")
    assert (dummy.paligemma.width, dummy.paligemma.depth, dummy.paligemma.mlp_dim, dummy.paligemma.head_dim) == (
        64, 4, 128, 16)
    assert Pi0Config.from_dict(dummy.to_dict()) == dummy
    with pytest.raises(ValueError, match="share depth"):
        dummy.replace(expert=dataclasses.replace(dummy.expert, head_dim=8))
    with pytest.raises(ValueError, match="unknown pi0 variant"):
        Pi0Config.variant("pi1")


def test_block_mask_structure():
    model = tiny_model(camera_names=("a", "b"))
    cfg = model.config
    n_img = cfg.vision.num_patches
    obs = tiny_obs(cfg, batch=1, prompt_len=5)
    obs = dataclasses.replace(obs, image_masks={"a": torch.tensor([True]), "b": torch.tensor([False])})
    _, prefix_pad = model.embed_prefix(obs)
    mask, positions = model.full_attention_mask(prefix_pad)
    m = mask[0]
    P, S = cfg.prefix_len, cfg.suffix_len
    assert m.shape == (P + S, P + S)
    cam_a, cam_b = slice(0, n_img), slice(n_img, 2 * n_img)
    text = slice(2 * n_img, 2 * n_img + 5)
    text_pad = slice(2 * n_img + 5, P)
    state, actions = P, slice(P + 1, P + S)
    valid_prefix = torch.zeros(P, dtype=torch.bool)
    valid_prefix[cam_a] = True
    valid_prefix[text] = True
    # valid prefix tokens see exactly the valid prefix (both directions) and never the suffix
    for rows in (cam_a, text):
        assert torch.equal(m[rows, :P], valid_prefix.expand(m[rows, :P].shape))
        assert not m[rows, P:].any()
    # missing camera and padded text are never attended to (and attend to nothing)
    assert not m[:, cam_b].any() and not m[:, text_pad].any()
    assert not m[cam_b].any() and not m[text_pad].any()
    # state: valid prefix + itself, not the actions
    assert torch.equal(m[state, :P], valid_prefix) and m[state, state] and not m[state, actions].any()
    # actions: valid prefix + state + all actions (bidirectional within the chunk)
    assert torch.equal(m[actions, :P], valid_prefix.expand(S - 1, P))
    assert m[actions, P:].all()
    # RoPE positions skip padding: text starts right after the one valid camera, suffix after the text
    assert positions[0, text].tolist() == list(range(n_img, n_img + 5))
    assert positions[0, P:].tolist() == list(range(n_img + 5, n_img + 5 + S))


def test_make_attention_mask_matches_rule():
    pad = torch.tensor([[True, True, False, True, True]])
    ar = torch.tensor([0, 0, 0, 1, 0])
    m = make_attention_mask(pad, ar)[0]
    cum = ar.cumsum(0)
    for i in range(5):
        for j in range(5):
            assert bool(m[i, j]) == bool(cum[j] <= cum[i] and pad[0, i] and pad[0, j])


def test_cached_sampling_equals_uncached():
    model = tiny_model()
    obs = tiny_obs(model.config)
    noise = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(3))
    cached = model.sample_actions(obs, noise)
    reference = model.sample_actions(obs, noise, use_cache=False)
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)
    assert cached.shape == (2, 50, 32) and cached.dtype == torch.float32


def test_eager_fp32_attention_equals_sdpa():
    sdpa = tiny_model()
    eager = tiny_model(attention="eager")
    eager.load_state_dict(sdpa.state_dict())
    obs = tiny_obs(sdpa.config)
    noise = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sdpa.sample_actions(obs, noise), eager.sample_actions(obs, noise),
                               atol=1e-5, rtol=1e-5)


def test_fixed_noise_is_deterministic_and_noise_matters():
    model = tiny_model()
    obs = tiny_obs(model.config)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(2, 50, 32, generator=g)
    a, b = model.sample_actions(obs, noise), model.sample_actions(obs, noise.clone())
    assert torch.equal(a, b)
    c = model.sample_actions(obs, torch.randn(2, 50, 32, generator=g))
    assert not torch.allclose(a, c)
    s1 = model.sample_actions(obs, generator=torch.Generator().manual_seed(9))
    s2 = model.sample_actions(obs, generator=torch.Generator().manual_seed(9))
    assert torch.equal(s1, s2)


def test_missing_camera_and_padding_change_nothing():
    """A masked camera slot (whatever its pixels) and extra prompt padding must not change the actions: this
    checks the mask and that RoPE positions skip padding (a model with fewer slots gives the same result)."""
    two = tiny_model(camera_names=("a", "b"))
    one = tiny_model(camera_names=("a",))
    one.load_state_dict(two.state_dict())
    obs = tiny_obs(two.config, prompt_len=6)
    noise = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(6))
    masked = dataclasses.replace(obs, image_masks={"a": torch.ones(2, dtype=torch.bool),
                                                   "b": torch.zeros(2, dtype=torch.bool)})
    out_two = two.sample_actions(masked, noise)
    junk = dataclasses.replace(masked, images={"a": obs.images["a"], "b": torch.rand_like(obs.images["b"])})
    torch.testing.assert_close(two.sample_actions(junk, noise), out_two, atol=1e-5, rtol=1e-5)
    absent = dataclasses.replace(masked, images={"a": obs.images["a"]}, image_masks={})
    torch.testing.assert_close(two.sample_actions(absent, noise), out_two, atol=1e-5, rtol=1e-5)
    # fewer prompt slots: the same 6 valid tokens padded to 8 instead of 48
    one_short = tiny_model(camera_names=("a",), max_token_len=8)
    one_short.load_state_dict(two.state_dict())
    short = Observation(images={"a": obs.images["a"]}, image_masks={}, tokens=obs.tokens[:, :8],
                        token_mask=obs.token_mask[:, :8], state=obs.state)
    torch.testing.assert_close(one_short.sample_actions(short, noise), out_two, atol=1e-5, rtol=1e-5)
    # and the padded token ids themselves are ignored
    noisy_pad = dataclasses.replace(masked, tokens=torch.where(obs.token_mask, obs.tokens, 7))
    torch.testing.assert_close(two.sample_actions(noisy_pad, noise), out_two, atol=1e-5, rtol=1e-5)
    # a visible camera does matter
    seen = dataclasses.replace(obs, images={"a": obs.images["a"], "b": torch.rand_like(obs.images["b"])})
    assert not torch.allclose(two.sample_actions(seen, noise), two.sample_actions(obs, noise))


def test_bad_observation_is_rejected_clearly():
    model = tiny_model()
    obs = tiny_obs(model.config)
    with pytest.raises(ValueError, match="no slot"):
        model.sample_actions(dataclasses.replace(obs, images={**obs.images, "cam_low": obs.images["base_0_rgb"]}))
    with pytest.raises(ValueError, match=r"expected \[B, 3, 56, 56\]"):
        model.sample_actions(dataclasses.replace(obs, images={"base_0_rgb": torch.zeros(2, 3, 224, 224)}))


def test_time_embedding_formula():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = flow_time_embedding(t, 8, 4e-3, 4.0)
    period = 4e-3 * (4.0 / 4e-3) ** torch.linspace(0, 1, 4, dtype=torch.float64)
    ang = t.double()[:, None] * 2 * torch.pi / period
    torch.testing.assert_close(emb, torch.cat([ang.sin(), ang.cos()], -1).float())


def test_compute_loss_formula_and_reductions():
    model = tiny_model()
    obs = tiny_obs(model.config)
    g = torch.Generator().manual_seed(7)
    actions, noise = torch.randn(2, 50, 32, generator=g), torch.randn(2, 50, 32, generator=g)
    time = torch.tensor([0.3, 0.9])
    per = model.compute_loss(obs, actions, noise, time, reduction="none")
    assert per.shape == (2, 50, 32)
    torch.testing.assert_close(model.compute_loss(obs, actions, noise, time), per.mean())
    # the prediction is the velocity of the Euler sampler: v(x_t, t) with x_t = t*eps + (1-t)*a, target eps - a
    x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
    embs, pad = model.embed_prefix(obs)
    with torch.no_grad():
        v = model.velocity(embs, pad, model.embed_state(obs.state), x_t, model.time_embedding(time))
    torch.testing.assert_close(per, (v - (noise - actions)) ** 2)
    lerobot = tiny_model(loss_action_dims=14)
    lerobot.load_state_dict(model.state_dict())
    torch.testing.assert_close(lerobot.compute_loss(obs, actions, noise, time), per[..., :14].mean())


def test_tiny_model_overfits_a_fixed_batch():
    model = tiny_model(seed=2).train()
    obs = tiny_obs(model.config, batch=2)
    g = torch.Generator().manual_seed(8)
    actions = torch.randn(2, 50, 32, generator=g).clamp(-2, 2)
    noise = torch.randn(2, 50, 32, generator=g)
    time = torch.tensor([0.4, 0.7])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = None
    for _ in range(120):
        loss = model.compute_loss(obs, actions, noise, time)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = model.compute_loss(obs, actions, noise, time).item()
    assert last < first / 10, (first, last)


def test_bf16_policy_runs_and_keeps_fp32_where_the_reference_does():
    model = tiny_model(dtype="bfloat16").apply_precision()
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes[PREFIX + "paligemma.model.language_model.layers.0.input_layernorm.weight"] == torch.float32
    assert dtypes[PREFIX + "gemma_expert.model.norm.weight"] == torch.float32
    assert dtypes[PREFIX + "paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"] == \
        torch.float32
    assert dtypes[PREFIX + "paligemma.model.language_model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert dtypes["action_out_proj.weight"] == torch.bfloat16
    lm = model.paligemma_with_expert.paligemma
    assert lm.lm_head.weight is lm.model.language_model.embed_tokens.weight
    obs = tiny_obs(model.config)
    noise = torch.randn(2, 50, 32)
    out = model.sample_actions(obs, noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    loss = model.compute_loss(obs, torch.randn(2, 50, 32), noise, torch.tensor([0.5, 0.5]))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flex"])
def test_masked_logits_stay_finite(impl):
    """A padding query token of the prompt attends to nothing: make_attention_mask masks its whole row. Its
    attention must come out finite (uniform weights from the finite MASK_VALUE, not 0/0 from a softmax over all
    -inf), in fp32 and bf16; a NaN there would reach every token through the next layer's K/V."""
    from finetune.model.gemma import attend

    assert MASK_VALUE > torch.finfo(torch.bfloat16).min  # representable in bf16: the bias is built in the dtype
    model = tiny_model(attention=impl)
    obs = tiny_obs(model.config, prompt_len=3)
    with torch.no_grad():  # flex has no CPU backward
        embs, pad = model.embed_prefix(obs)
    mask = make_attention_mask(pad, torch.zeros(pad.shape[1], dtype=torch.long))
    fully_masked = ~mask.any(dim=-1)  # [B, S] queries that see no key at all
    assert fully_masked.any() and torch.equal(fully_masked, ~pad)  # the case under test: the prompt padding
    positions = torch.cumsum(pad.long(), dim=1) - 1
    pwe = model.paligemma_with_expert
    layer = pwe.paligemma.model.language_model.layers[0]
    for dtype in (torch.float32, torch.bfloat16):
        attn = pwe.attention_inputs(mask, positions, dtype)
        with torch.no_grad():
            q, k, v = (t.to(dtype) for t in layer.qkv(embs, attn.cos, attn.sin))
            out = attend(q, k, v, attn.bias, impl, attn.block_mask)
        assert torch.isfinite(out[fully_masked]).all(), dtype
        assert torch.isfinite(out).all(), dtype
    # and through the whole model: prefix K/V (read by every denoising step) and the actions
    cache = model.prefill(obs)
    assert all(torch.isfinite(t[:, :, :cache.prefix_len]).all() for kv in cache.kv for t in kv)
    assert torch.isfinite(model.sample_actions(obs, torch.zeros(2, 50, 32))).all()


def test_denoise_loop_traces_as_one_graph():
    """torch.compile readiness: the 10-step loop has no graph breaks (dynamo with the eager backend, so no C++
    compiler is needed here)."""
    model = tiny_model()
    obs = tiny_obs(model.config, batch=1)
    noise = torch.randn(1, 50, 32)
    cache = model.prefill(obs)
    compiled = torch.compile(model.denoise, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(cache, obs.state, noise), model.denoise(cache, obs.state, noise))
    torch._dynamo.reset()


def test_parameter_count_counts_tied_weight_once():
    model = tiny_model()
    sd_total = sum(v.numel() for v in model.state_dict().values())
    emb = model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight.numel()
    assert count_parameters(model) == sd_total - emb
    assert isinstance(model, Pi0)


def test_grouped_attention_matches_naive_per_head():
    from finetune.model.gemma import attend

    g = torch.Generator().manual_seed(10)
    b, h, kvh, sq, sk, d = 2, 4, 2, 5, 7, 8
    q, k, v = (torch.randn(b, n, s, d, generator=g) for n, s in ((h, sq), (kvh, sk), (kvh, sk)))
    mask = torch.rand(b, sq, sk, generator=g) > 0.3
    mask[..., 0] = True
    bias = torch.zeros(b, sq, sk).masked_fill(~mask, MASK_VALUE)[:, None].repeat(1, 1, h // kvh, 1)
    expected = torch.empty(b, sq, h, d)
    for head in range(h):
        kk, vv = k[:, head // (h // kvh)], v[:, head // (h // kvh)]
        logits = q[:, head] @ kk.transpose(-1, -2) / d ** 0.5
        logits = logits.masked_fill(~mask, float("-inf"))
        expected[:, :, head] = torch.softmax(logits, -1) @ vv
    for impl in ("sdpa", "eager"):
        torch.testing.assert_close(attend(q, k, v, bias, impl), expected.reshape(b, sq, h * d))


def test_rope_matches_the_jax_formula():
    from finetune.model.gemma import apply_rope, rope_cos_sin

    x = torch.randn(1, 1, 3, 8)
    pos = torch.tensor([[0, 5, 17]])
    cos, sin = rope_cos_sin(pos, 8, 10000.0)
    timescale = 10000.0 ** (2 * torch.arange(4) / 8)
    rad = pos[0, :, None] / timescale
    x1, x2 = x[0, 0, :, :4], x[0, 0, :, 4:]
    expected = torch.cat([x1 * rad.cos() - x2 * rad.sin(), x2 * rad.cos() + x1 * rad.sin()], -1)
    torch.testing.assert_close(apply_rope(x, cos, sin)[0, 0], expected)


def test_static_sampler_matches_sample_actions_and_reuses_buffers():
    from finetune.model.fast import StaticSampler

    model = tiny_model()
    sampler = StaticSampler(model, batch_size=2, mode="eager", warmup=1)
    obs = tiny_obs(model.config)
    noise = torch.randn(2, 50, 32)
    torch.testing.assert_close(sampler(obs, noise), model.sample_actions(obs, noise))
    images_before = sampler.obs.images["base_0_rgb"]
    partial = dataclasses.replace(obs, images={"base_0_rgb": obs.images["base_0_rgb"]}, image_masks={})
    out = sampler(partial, noise)
    assert sampler.obs.images["base_0_rgb"] is images_before  # copied into, not replaced
    assert not sampler.obs.image_masks["left_wrist_0_rgb"].any()
    torch.testing.assert_close(out, model.sample_actions(partial, noise))
    with pytest.raises(ValueError, match="CUDA"):
        StaticSampler(model, mode="graph")
