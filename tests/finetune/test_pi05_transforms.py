"""pi0.5's transform chain: quantile normalization and openpi's discretized-state prompt, one pipeline object for
training and serving, saved in transforms.json."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from finetune.model_config import Pi0Config
from finetune.normalize import NormStats, quantile_normalize, quantile_unnormalize
from finetune.stats import compute_norm_stats
from finetune.tokenizer import PromptTokenizer, train_small_tokenizer
from finetune.transforms import PolicyTransforms, TransformConfig
from finetune.transforms.prompt import discretize_state, state_prompt_text, tokenize_state_prompt

TINY = Pi0Config.variant("pi05_tiny")
NAMES = tuple(f"j{i}" for i in range(14))


def rig_stats(rng: np.random.Generator) -> dict[str, NormStats]:
    def one() -> NormStats:
        lo = rng.uniform(-2, 0, 14)
        hi = lo + rng.uniform(0.5, 3, 14)
        return NormStats(mean=(lo + hi) / 2, std=(hi - lo) / 4, q01=lo, q99=hi)
    return {"state": one(), "actions": one()}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PromptTokenizer:
    """The small tokenizer the tiny/small models' runs train (finetune.tokenizer.tokenizer_for_run)."""
    return PromptTokenizer.for_model(train_small_tokenizer(tmp_path_factory.mktemp("tok")), TINY)


def test_state_bins_and_prompt_text_match_openpis_format_on_known_values():
    state = np.zeros(32)
    state[:9] = [-1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 1.5, -1.2, 0.3]
    # by hand: bin = floor((x + 1) * 128) on [-1, 1 - 1/128), 255 from there up, -1 below -1
    want = [0, 1, 128, 192, 255, 255, 255, -1, 166] + [128] * 23
    assert discretize_state(state).tolist() == want
    text = state_prompt_text("  pick_up the\ncube ", state)
    assert text == "Task: pick up the cube, State: " + " ".join(map(str, want)) + ";\nAction: "


def test_state_prompt_tokens_are_bos_text_and_padding(tokenizer):
    state = np.linspace(-1, 1, 32)
    tp = tokenize_state_prompt(tokenizer, "transfer the cube", state)
    ids = [tokenizer.sp.bos_id(), *tokenizer.sp.encode(state_prompt_text("transfer the cube", state))]
    assert tokenizer.sp.unk_id() not in ids  # the numbers are tokens, not <unk>
    assert tp.tokens.shape == tp.mask.shape == (200,)
    assert tp.tokens[: len(ids)].tolist() == ids and tp.mask.sum() == len(ids)
    assert not tp.tokens[len(ids):].any() and not tp.mask[len(ids):].any()
    short = PromptTokenizer(tokenizer.path, max_len=20)
    with pytest.warns(UserWarning, match="truncated to 20"):
        assert tokenize_state_prompt(short, "transfer the cube", state).mask.all()


def test_the_small_tokenizer_reads_two_states_as_different_tokens_that_decode_to_openpis_prompt(tokenizer):
    """The tiny/small pi0.5's own tokenizer (trained into the run folder) has pieces for every character of the
    state prompt, so the discretized state is real tokens (before: digits and 'Task: State: Action: , ;' were
    <unk>, every state read the same)."""
    rng = np.random.default_rng(4)
    pt = PolicyTransforms(TransformConfig.for_model(TINY), rig_stats(rng), tokenizer)
    frames = {"cam_high": np.zeros((30, 40, 3), np.uint8)}
    sp = tokenizer.sp
    prompts = []
    for state in (rng.uniform(-1, 1, 14), rng.uniform(-1, 1, 14)):
        obs = pt.observation(state, frames, "transfer_the cube ")
        n = int(obs.token_mask[0].sum())
        ids = obs.tokens[0, :n].tolist()
        assert ids[0] == sp.bos_id() and sp.unk_id() not in ids and not obs.tokens[0, n:].any()
        bins = discretize_state(pt.state_actions(state).state[:14])
        assert bins.min() >= -1 and bins.max() <= 255
        # openpi's format, spelled out: cleaned task, the 14 bins, ";\nAction: "
        want = "Task: transfer the cube, State: " + " ".join(str(int(b)) for b in bins) + ";\nAction: "
        assert sp.decode(ids[1:]) == want
        prompts.append(ids)
    assert prompts[0] != prompts[1]


def test_quantile_normalization_round_trips_and_maps_the_quantiles():
    rng = np.random.default_rng(0)
    st = rig_stats(rng)["state"]
    x = rng.uniform(-3, 3, (7, 14))
    y = quantile_normalize(x, st)
    np.testing.assert_allclose(quantile_unnormalize(y, st), x, atol=1e-12)
    np.testing.assert_allclose(quantile_normalize(st.q01, st), -1.0, atol=1e-5)
    np.testing.assert_allclose(quantile_normalize(st.q99, st), 1.0, atol=1e-5)
    flat = NormStats(np.ones(2), np.zeros(2), q01=np.ones(2), q99=np.ones(2))  # zero range: epsilon, finite
    z = quantile_normalize(np.array([1.0, 1.5]), flat)
    assert np.isfinite(z).all() and z[0] == -1.0
    np.testing.assert_allclose(quantile_unnormalize(z, flat), [1.0, 1.5])
    with pytest.raises(ValueError, match="needs q01 and q99"):
        quantile_normalize(x, NormStats(st.mean, st.std))


def test_pi05_chain_uses_quantiles_and_round_trips_actions():
    cfg = TransformConfig.for_model(TINY)
    assert (cfg.normalization, cfg.discrete_state_input) == ("quantile", True)
    assert TransformConfig.for_model(Pi0Config.variant("pi0_tiny")).normalization == "zscore"
    rng = np.random.default_rng(1)
    stats = rig_stats(rng)
    pt = PolicyTransforms(cfg, stats)
    state = rng.uniform(-1, 1, 14)
    actions = rng.uniform(-1, 1, (50, 14))
    v = pt.state_actions(state, actions)
    np.testing.assert_allclose(pt.actions(v.actions, state), actions, atol=1e-5)
    zscored = PolicyTransforms(dataclasses.replace(cfg, normalization="zscore"), stats).state_actions(state, actions)
    assert not np.allclose(zscored.state, v.state)


def test_serving_prompt_carries_the_training_state_and_the_config_is_saved(tmp_path, tokenizer):
    rng = np.random.default_rng(2)
    pt = PolicyTransforms(TransformConfig.for_model(TINY), rig_stats(rng), tokenizer)
    pt.save(tmp_path)
    again = PolicyTransforms.from_folder(tmp_path, tokenizer)
    assert again.config == pt.config and again.config.discrete_state_input
    state = rng.uniform(-1, 1, 14)
    frames = {"cam_high": np.zeros((30, 40, 3), np.uint8)}
    obs = again.observation(state, frames, "transfer the cube")
    model_state = pt.state_actions(state).state
    assert model_state.shape == (32,) and pt.config.prompt_state_dims == 14
    # openpi tokenizes the state before padding it: the prompt holds the 14 rig dims, not the 32 padded ones
    want = tokenize_state_prompt(tokenizer, "transfer the cube", model_state[:14])
    assert torch.equal(obs.tokens[0], torch.from_numpy(want.tokens))
    assert torch.equal(obs.token_mask[0], torch.from_numpy(want.mask))
    assert torch.equal(torch.from_numpy(pt.prompt_tokens("transfer the cube", model_state).tokens), obs.tokens[0])
    # a transforms.json without the field (written before it existed): the whole padded vector, as it trained
    legacy = dict(pt.config.to_json())
    del legacy["prompt_state_dims"]
    padded = PolicyTransforms(TransformConfig.from_json(legacy), pt.norm_stats, tokenizer)
    assert padded.config.prompt_state_dims is None
    assert padded.prompt_tokens("transfer the cube", model_state).tokens.tolist() == \
        tokenize_state_prompt(tokenizer, "transfer the cube", model_state).tokens.tolist()
    moved = again.observation(state + 0.5, frames, "transfer the cube")
    assert not torch.equal(moved.tokens, obs.tokens)
    # discrete_state_input=False (openpi's pi05_libero): pi0's prompt, the state left out
    off = PolicyTransforms(dataclasses.replace(pt.config, discrete_state_input=False), pt.norm_stats, tokenizer)
    assert torch.equal(off.observation(state, frames, "transfer the cube").tokens[0],
                       torch.from_numpy(tokenizer.tokenize("transfer the cube").tokens))


def test_stats_keep_quantiles_and_fix_a_constant_dim_for_the_quantile_chain():
    cfg = TransformConfig.for_model(TINY)
    rng = np.random.default_rng(3)
    state = rng.uniform(-1, 1, (80, 14))
    state[:, 3] = 0.25  # a joint that never moves
    res = compute_norm_stats([(state, state + 0.01)], cfg, dim_names=NAMES, low_std="fix")
    st = res.stats["state"]
    assert st.q01 is not None and st.q99 is not None and "state/j3" in res.fixed
    assert (st.q01[3], st.q99[3]) == (st.mean[3] - 1.0, st.mean[3] + 1.0)
    out = PolicyTransforms(cfg, res.stats).state_actions(state[0]).state
    assert np.isfinite(out).all() and abs(out[3]) < 1e-6
