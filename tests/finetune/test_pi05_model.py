"""pi0.5: the full-size layout, strict hub loading and refusals, and the shared inference paths."""

from __future__ import annotations

import pytest
import torch

from finetune.checkpoint import (CheckpointKeyError, CheckpointKindError, build_model, load_pi0, read_config,
                                 save_pi0)
from finetune.model.fast import StaticSampler
from finetune.model.pi0 import Pi0, random_observation
from finetune.model.pi05 import Pi05
from finetune.model_config import Pi0Config
from pi0_helpers import PREFIX, numel, tiny_model, tiny_obs
from pi05_helpers import PI05_TINY, reference_pi05_hub_keys, tiny_pi05, write_pi05_hub_style

PUBLISHED_PARAMS = 3_616_757_520  # lerobot/pi05_base model.safetensors (pi05.md)
EMBED = PREFIX + "paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = PREFIX + "paligemma.lm_head.weight"
EXPERT_HEAD = PREFIX + "gemma_expert.lm_head.weight"


def test_full_size_pi05_on_meta_has_the_published_count_and_layout():
    cfg = Pi0Config.variant("pi05")
    assert (cfg.pi05, cfg.discrete_state_input, cfg.max_token_len, cfg.suffix_len) == (True, True, 200, 50)
    model = build_model(cfg, "meta")
    assert isinstance(model, Pi05)
    ref = reference_pi05_hub_keys(cfg)
    assert numel(ref) == PUBLISHED_PARAMS
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != EMBED}
    assert ours == {k: s for k, s in ref.items() if k != EXPERT_HEAD}
    assert sum(p.numel() for p in model.parameters()) + numel({EXPERT_HEAD: ref[EXPERT_HEAD]}) == PUBLISHED_PARAMS


def test_hub_layout_pi05_loads_strictly_with_the_tied_embedding(tmp_path):
    tensors = write_pi05_hub_style(tmp_path / "ckpt", PI05_TINY)
    model = load_pi0(tmp_path / "ckpt", config=PI05_TINY, kind="pi05")
    sd = model.state_dict()
    assert isinstance(model, Pi05) and EXPERT_HEAD not in sd
    for k, v in tensors.items():
        if k != EXPERT_HEAD:
            assert torch.equal(sd[k], v), k
    assert torch.equal(sd[EMBED], tensors[LM_HEAD])
    pal = model.paligemma_with_expert.paligemma
    assert pal.lm_head.weight is pal.model.language_model.embed_tokens.weight
    model.sample_actions(random_observation(model.config, 1))  # runs


def test_lerobot_pi05_config_json_is_recognized():
    d = {"type": "pi05", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "chunk_size": 50,
         "max_state_dim": 32, "max_action_dim": 32, "dtype": "float32"}
    cfg = Pi0Config.from_dict(d)
    assert (cfg.pi05, cfg.discrete_state_input, cfg.max_token_len, cfg.name) == (True, True, 200, "pi05")
    assert build_model(cfg).config.kind == "pi05"
    assert Pi0Config.from_dict(cfg.to_dict()) == cfg
    assert not Pi0Config.from_dict({**d, "type": "pi0"}).pi05
    with pytest.raises(ValueError, match="policy type 'smolvla'"):
        Pi0Config.from_dict({**d, "type": "smolvla"})


def test_pi0_checkpoint_refused_as_a_pi05_base_and_the_reverse(tmp_path):
    pi0 = tiny_model()
    save_pi0(pi0, tmp_path / "pi0")
    with pytest.raises(CheckpointKindError, match=r"is a pi0 checkpoint .*state_proj.weight.* a pi0\.5 model"):
        load_pi0(tmp_path / "pi0", config=PI05_TINY)
    with pytest.raises(CheckpointKindError, match=r"config\.json describes a pi0 model.*a pi0\.5 model was asked"):
        load_pi0(tmp_path / "pi0", kind="pi05")
    save_pi0(tiny_pi05(), tmp_path / "pi05")
    with pytest.raises(CheckpointKindError, match=r"is a pi0\.5 checkpoint .*time_mlp_in.weight.*lerobot/pi0_base"):
        load_pi0(tmp_path / "pi05", config=Pi0Config.variant("pi0_tiny"))
    with pytest.raises(CheckpointKindError, match="a pi0 model was asked"):
        read_config(tmp_path / "pi05", kind="pi0")
    assert isinstance(load_pi0(tmp_path / "pi05", kind="pi05"), Pi05)  # our own save round-trips


def test_pi05_missing_and_misshapen_keys_are_named(tmp_path):
    dense = PREFIX + "gemma_expert.model.layers.1.post_attention_layernorm.dense.weight"
    write_pi05_hub_style(tmp_path / "a", PI05_TINY, drop=(dense,), reshape={"time_mlp_out.bias": (31,)})
    with pytest.raises(CheckpointKeyError) as e:
        load_pi0(tmp_path / "a", config=PI05_TINY)
    msg = str(e.value)
    assert "missing (1)" in msg and dense in msg
    assert "time_mlp_out.bias: checkpoint [31] vs model [32]" in msg


def test_pi05_cached_static_and_uncached_sampling_agree():
    model = tiny_pi05()
    obs = tiny_obs(model.config)
    noise = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(3))
    cached = model.sample_actions(obs, noise)
    torch.testing.assert_close(cached, model.sample_actions(obs, noise, use_cache=False), atol=1e-5, rtol=1e-5)
    sampler = StaticSampler(model, batch_size=2)
    torch.testing.assert_close(sampler(obs, noise), cached, atol=1e-5, rtol=1e-5)
    # the modulation is live: zeroing it changes the chunk
    zeroed = tiny_pi05(modulation_std=0.0)
    assert not torch.allclose(zeroed.sample_actions(obs, noise), cached, atol=1e-3)


def test_pi05_state_is_not_a_model_input():
    """pi0.5 reads the state only through the prompt: the state tensor changes nothing."""
    model = tiny_pi05()
    obs = tiny_obs(model.config)
    noise = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(4))
    other = type(obs)(obs.images, obs.image_masks, obs.tokens, obs.token_mask, obs.state + 5.0)
    assert torch.equal(model.sample_actions(obs, noise), model.sample_actions(other, noise))
    assert model.suffix_ar(torch.device("cpu")).tolist() == [1] + [0] * 49


def test_pi05_rtc_paths_run_and_freeze_the_prefix():
    model = tiny_pi05()
    obs = tiny_obs(model.config, batch=1)
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(5))
    prefix = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(6))
    cache = model.prefill(obs)
    plain = model.denoise(cache, obs.state, noise)
    guided = model.denoise_guided(model.prefill(obs), obs.state, noise, prefix, delay=4, prefix_len=20)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)
    # guidance pulls the frozen steps towards the prefix
    assert (guided[:, :4] - prefix[:, :4]).abs().mean() < (plain[:, :4] - prefix[:, :4]).abs().mean()
    cond = model.denoise_conditioned(model.prefill(obs), obs.state, noise, prefix, delay=5)
    assert torch.equal(cond[:, :5], prefix[:, :5]) and torch.isfinite(cond).all()


def test_pi05_gradient_checkpointing_and_per_token_time_match():
    model = tiny_pi05().train()
    obs = tiny_obs(model.config)
    g = torch.Generator().manual_seed(9)
    actions, noise = torch.randn(2, 50, 32, generator=g), torch.randn(2, 50, 32, generator=g)
    time = torch.tensor([0.3, 0.8])
    plain = model.compute_loss(obs, actions, noise, time)
    plain.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any(".dense." in n for n in grads) and any(n.startswith("time_mlp_in") for n in grads)
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    ck = model.compute_loss(obs, actions, noise, time)
    ck.backward()
    torch.testing.assert_close(ck, plain)
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)
    # training-time RTC (one time per token) with delay 0 is the per-sample path
    torch.testing.assert_close(model.compute_loss(obs, actions, noise, time, delay=torch.zeros(2, dtype=torch.long)),
                               plain, atol=1e-6, rtol=1e-6)


def test_pi05_tiny_overfits_a_fixed_batch_from_openpis_zero_modulation():
    torch.manual_seed(2)
    model = Pi05(PI05_TINY).train()  # modulation zero (openpi's init): the expert starts as the identity
    obs = tiny_obs(model.config, batch=2)
    g = torch.Generator().manual_seed(8)
    actions = torch.randn(2, 50, 32, generator=g).clamp(-2, 2)
    noise = torch.randn(2, 50, 32, generator=g)
    time = torch.tensor([0.4, 0.7])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = model.compute_loss(obs, actions, noise, time).item()
    for _ in range(120):
        loss = model.compute_loss(obs, actions, noise, time)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.compute_loss(obs, actions, noise, time).item() < first / 10


def test_pi0_and_pi05_classes_refuse_each_others_configs():
    with pytest.raises(ValueError, match="needs a pi0.5 config"):
        Pi05(Pi0Config.variant("pi0_tiny"))
    with pytest.raises(ValueError, match="discrete_state_input is a pi0.5 option"):
        Pi0Config.variant("pi0_tiny").replace(discrete_state_input=True)
    assert type(build_model(Pi0Config.variant("pi0_tiny"))) is Pi0


def test_pi05_expert_refuses_a_suffix_without_its_condition():
    model = tiny_pi05()
    obs = tiny_obs(model.config, batch=1)
    cache = model.prefill(obs)
    attn = model.suffix_attention(cache, 1, torch.device("cpu"))
    suffix, cond = model.suffix_inputs(None, torch.zeros(1, 50, 32), model.time_embedding(torch.ones(1)))
    pwe = model.paligemma_with_expert
    with pytest.raises(ValueError, match="needs suffix_cond"):
        pwe(None, suffix, attn, kv_cache=cache.kv, kv_write_at=cache.prefix_len)
    _, out, _ = pwe(None, suffix, attn, kv_cache=cache.kv, kv_write_at=cache.prefix_len, suffix_cond=cond)
    assert out.shape == (1, 50, model.config.expert.width)


def test_random_pi05_init_gives_the_expert_norms_a_time_signal():
    """From random weights (the CPU presets) the time MLP is lecun-normal, as openpi's nnx.Linear: at the other
    matrices' N(0, 0.02) the condition of pi05_tiny's zero-init modulations was rms 0.002 and the expert trained
    nearly time-blind (its grippers overshot in closed loop). The modulations still start at zero."""
    from finetune.checkpoint import random_init_

    for variant in ("pi05_tiny", "pi05_small"):
        model = random_init_(build_model(Pi0Config.variant(variant), "meta"), "cpu")
        with torch.no_grad():
            cond = model.time_condition(model.time_embedding(torch.linspace(0.001, 1.0, 64)))
        assert cond.pow(2).mean().sqrt() > 0.1 and cond.std(0).mean() > 0.1, variant  # and it varies with t
        w = model.time_mlp_in.weight
        assert abs(w.std().item() - w.shape[1] ** -0.5) < 0.3 * w.shape[1] ** -0.5
        assert abs(model.action_in_proj.weight.std().item() - 0.02) < 0.005  # the rest as before
        norms = [n for n, p in model.named_parameters() if ".dense." in n]
        assert norms and all(not model.get_parameter(n).any() for n in norms)  # adaLN-zero
