"""Checkpoints: hub key layout, strict checks, streaming cast, our save/load round trip, norm stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from finetune.checkpoint import (
    CheckpointKeyError,
    build_model,
    load_pi0,
    read_safetensors_header,
    save_pi0,
    save_tensors,
)
from finetune.model_config import Pi0Config
from finetune.normalize import NormStats, find_norm_stats, load_norm_stats, normalize, unnormalize
from pi0_helpers import PREFIX, reference_hub_keys, tiny_model, tiny_obs

EXPERT_HEAD = PREFIX + "gemma_expert.lm_head.weight"
LM_HEAD = PREFIX + "paligemma.lm_head.weight"
EMBED = PREFIX + "paligemma.model.language_model.embed_tokens.weight"


def write_hub_style(folder, cfg: Pi0Config, dtype=torch.float32, drop=(), extra=None, reshape=None, seed=0):
    """A checkpoint as the hub stores it: reference key layout, tied embed_tokens absent, the unused expert
    lm_head present, written with safetensors' own writer; config.json in LeRobot's style."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for k, shape in reference_hub_keys(cfg).items():
        if k in drop:
            continue
        shape = (reshape or {}).get(k, shape)
        tensors[k] = (torch.randn(shape, generator=g) * 0.05).to(dtype)
    tensors.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors


TINY = Pi0Config.variant("pi0_tiny")


def test_hub_layout_checkpoint_loads_strictly(tmp_path):
    tensors = write_hub_style(tmp_path / "ckpt", TINY)
    model = load_pi0(tmp_path / "ckpt", config=TINY)
    sd = model.state_dict()
    for k, v in tensors.items():
        if k == EXPERT_HEAD:
            assert k not in sd  # skipped, never allocated
            continue
        assert torch.equal(sd[k], v), k
    # the tied embedding is rebuilt from lm_head and stays tied
    assert torch.equal(sd[EMBED], tensors[LM_HEAD])
    lm = model.paligemma_with_expert.paligemma
    assert lm.lm_head.weight is lm.model.language_model.embed_tokens.weight
    assert not any(p.is_meta for p in model.parameters())
    out = model.sample_actions(tiny_obs(TINY), torch.zeros(2, 50, 32))
    assert torch.isfinite(out).all()


def test_fp32_file_streams_into_bf16_policy(tmp_path):
    tensors = write_hub_style(tmp_path / "ckpt", TINY, dtype=torch.float32)
    model = load_pi0(tmp_path / "ckpt", config=TINY, dtype="bfloat16")
    sd = model.state_dict()
    up = PREFIX + "paligemma.model.language_model.layers.1.mlp.up_proj.weight"
    norm = PREFIX + "gemma_expert.model.layers.0.input_layernorm.weight"
    assert sd[up].dtype == torch.bfloat16 and torch.equal(sd[up], tensors[up].to(torch.bfloat16))
    assert sd[norm].dtype == torch.float32 and torch.equal(sd[norm], tensors[norm])


def test_bf16_file_and_safe_open_reader_and_small_chunks(tmp_path, monkeypatch):
    import finetune.checkpoint as ck

    tensors = write_hub_style(tmp_path / "ckpt", TINY, dtype=torch.bfloat16)
    monkeypatch.setattr(ck, "CHUNK_BYTES", 1000)  # many chunks per tensor, odd boundaries
    a = load_pi0(tmp_path / "ckpt", config=TINY, reader="pread").state_dict()
    b = load_pi0(tmp_path / "ckpt", config=TINY, reader="safe_open").state_dict()
    for k, v in tensors.items():
        if k != EXPERT_HEAD:
            assert torch.equal(a[k], v.float()) and torch.equal(b[k], v.float()), k


def test_missing_unexpected_and_misshapen_keys_fail_clearly(tmp_path):
    q = PREFIX + "paligemma.model.language_model.layers.0.self_attn.q_proj.weight"
    state = "state_proj.weight"
    write_hub_style(tmp_path / "ckpt", TINY, drop={q}, reshape={state: (32, 31)},
                    extra={"bogus.weight": torch.zeros(3)})
    with pytest.raises(CheckpointKeyError) as info:
        load_pi0(tmp_path / "ckpt", config=TINY)
    msg = str(info.value)
    assert "missing (1)" in msg and q in msg
    assert "unexpected (1)" in msg and "bogus.weight" in msg
    assert "shape mismatch (1)" in msg and "state_proj.weight: checkpoint [32, 31] vs model [32, 32]" in msg
    assert info.value.missing == [q] and info.value.unexpected == ["bogus.weight"]


def test_wrong_variant_lists_capped_differences(tmp_path):
    write_hub_style(tmp_path / "ckpt", Pi0Config.variant("pi0_dummy"))
    with pytest.raises(CheckpointKeyError) as info:
        load_pi0(tmp_path / "ckpt", config=TINY)
    msg = str(info.value)
    assert "pi0_tiny" in msg and "... and" in msg and "more" in msg
    assert len(msg.splitlines()) < 50


def test_round_trip_with_norm_stats(tmp_path):
    model = tiny_model(seed=3)
    stats = {"state": NormStats(mean=np.arange(14.0), std=np.full(14, 2.0), q01=np.zeros(14), q99=np.ones(14)),
             "actions": NormStats(mean=np.zeros(14), std=np.ones(14))}
    save_pi0(model, tmp_path / "policy", norm_stats={"aloha_sim": stats})
    entries, meta = read_safetensors_header(tmp_path / "policy" / "model.safetensors")
    assert EMBED not in entries and LM_HEAD in entries and EXPERT_HEAD not in entries
    assert meta == {"format": "pt"}
    loaded = load_pi0(tmp_path / "policy")
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    obs, noise = tiny_obs(model.config), torch.randn(2, 50, 32)
    assert torch.equal(loaded.sample_actions(obs, noise), model.sample_actions(obs, noise))
    found = find_norm_stats(tmp_path / "policy")
    assert list(found) == ["aloha_sim"]
    back = load_norm_stats(found["aloha_sim"])
    assert np.array_equal(back["state"].mean, stats["state"].mean) and back["actions"].q01 is None


def test_bf16_round_trip_keeps_mixed_dtypes(tmp_path):
    model = tiny_model(dtype="bfloat16").apply_precision()
    save_pi0(model, tmp_path / "p")
    entries, _ = read_safetensors_header(tmp_path / "p" / "model.safetensors")
    assert entries[LM_HEAD].dtype == "BF16"
    assert entries[PREFIX + "gemma_expert.model.norm.weight"].dtype == "F32"
    loaded = load_pi0(tmp_path / "p")
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype and torch.equal(got, v), k


def test_our_writer_is_readable_by_safetensors(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.zeros(0, 4),
               "s": torch.tensor(2.5)}
    save_tensors(tmp_path / "x.safetensors", tensors, metadata={"format": "pt"})
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(tensors) and f.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v)


def test_openpi_converted_checkpoint_config_and_assets(tmp_path):
    """openpi's converter: same keys, config.json {action_dim, action_horizon, paligemma_variant,
    action_expert_variant, precision}, assets/<id>/norm_stats.json. The dummy Gemma pair keeps So400m vision,
    so only the config parsing and the (real-size vision) key check are exercised here, on meta."""
    cfg = Pi0Config.from_dict({"action_dim": 32, "action_horizon": 50, "paligemma_variant": "dummy",
                               "action_expert_variant": "dummy", "precision": "float32"})
    assert cfg.paligemma.width == 64 and cfg.vision.width == 1152 and cfg.dtype == "float32"
    lerobot = Pi0Config.from_dict({"type": "pi0", "paligemma_variant": "gemma_2b",
                                   "action_expert_variant": "gemma_300m", "chunk_size": 50, "max_action_dim": 32,
                                   "max_state_dim": 32, "tokenizer_max_length": 48, "num_inference_steps": 10,
                                   "dtype": "bfloat16"})
    assert lerobot == Pi0Config.variant("pi0")
    with pytest.raises(ValueError, match="policy type 'act'"):
        Pi0Config.from_dict({"type": "act", "paligemma_variant": "gemma_2b"})
    # a full openpi-style folder with tiny dims and its config.json/assets, loaded from disk
    folder = tmp_path / "openpi"
    write_hub_style(folder, TINY, drop={EXPERT_HEAD})
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()))
    stats_path = folder / "assets" / "trossen" / "norm_stats.json"
    stats_path.parent.mkdir(parents=True)
    stats_path.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0, 1.0], "std": [1.0, 0.0],
                                                               "q01": [0, 0], "q99": [1, 1]}}}))
    model = load_pi0(folder)
    assert model.config == TINY
    st = load_norm_stats(find_norm_stats(folder)["trossen"])["state"]
    assert st.low_variance_dims() == [1]
    x = np.array([[1.0, 1.0, 5.0]])
    y = normalize(x, st)
    assert y[0, 2] == 5.0  # padding passes through
    np.testing.assert_allclose(unnormalize(y, st), x)


def test_meta_build_allocates_nothing():
    model = build_model(Pi0Config.variant("pi0"), "meta")
    assert sum(p.numel() for p in model.parameters() if not p.is_meta) == 0
