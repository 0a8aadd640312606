"""The transform chain shared by training and serving: every invertible step round-trips, the ALOHA -> pi0
conventions match openpi's numbers, cameras are masked, chunks are padded, stats refuse or fix constant dims,
augmentation is seeded."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from finetune.augment import AugmentConfig, Augmenter, sample_rng
from finetune.model_config import Pi0Config
from finetune.normalize import NormStats, load_norm_stats
from finetune.stats import NearConstantError, NearConstantWarning, compute_norm_stats
from finetune.transforms import PolicyTransforms, TransformConfig
from finetune.transforms.chunks import action_chunk, chunk_indices
from finetune.transforms.config import GripperConversion
from drivers.cameras.resize import resize_with_pad
from finetune.transforms.images import from_unit_range, rename_cameras, to_unit_range
from finetune.transforms.vectors import (Chain, DeltaActions, GripperToPi, JointFlip, Normalize, PadTo, Vectors,
                                         angular_to_gripper, gripper_action_from_pi, gripper_action_to_pi,
                                         gripper_to_angular, vector_chain)
from finetune.episodes import ALOHA_DIM_NAMES

G = GripperConversion()
RNG = np.random.default_rng(0)
CFG = TransformConfig.for_model(Pi0Config.variant("pi0_tiny"))


def rig_sample(rng=RNG, h=50):
    """Rig-unit state [14] and actions [H, 14]: joints in rad, grippers normalized within [0, 1]."""
    s = rng.uniform(-1.5, 1.5, 14)
    a = rng.uniform(-1.5, 1.5, (h, 14))
    s[[6, 13]] = rng.uniform(0.0, 1.0, 2)
    a[:, [6, 13]] = rng.uniform(0.0, 1.0, (h, 2))
    return s, a


def stats(rng=RNG):
    return {"state": NormStats(rng.normal(size=14), rng.uniform(0.1, 2, 14)),
            "actions": NormStats(rng.normal(size=14), rng.uniform(0.1, 2, 14))}


def roundtrip(step, v: Vectors, tol=1e-12):
    back = step.inverse(step.forward(v))
    np.testing.assert_allclose(back.state, v.state, atol=tol, rtol=0)
    np.testing.assert_allclose(back.actions, v.actions, atol=tol, rtol=0)


# -- ALOHA -> pi0 ------------------------------------------------------------------------------------------

def test_joint_flip_negates_shoulder_and_elbow_and_round_trips():
    s, a = rig_sample()
    f = JointFlip(CFG.joint_flip).forward(Vectors(s, a))
    flipped = [1, 2, 8, 9]
    for i in range(14):
        sign = -1 if i in flipped else 1
        assert f.state[i] == sign * s[i] and (f.actions[:, i] == sign * a[:, i]).all()
    roundtrip(JointFlip(CFG.joint_flip), Vectors(s, a))


def test_state_gripper_matches_the_linkage_formula_and_round_trips():
    # fully open: finger 0.058 m -> (r^2 + x^2 - L^2) / (2 r x) = 1 -> pi/2, normalized over 0.5476 .. 1.6296
    assert gripper_to_angular(np.array(1.0), G) == pytest.approx((math.pi / 2 - 0.5476) / (1.6296 - 0.5476), abs=1e-6)
    x = 0.01844  # fully closed
    expected = (math.asin((0.022 ** 2 + x ** 2 - 0.036 ** 2) / (2 * 0.022 * x)) - 0.5476) / 1.082
    assert gripper_to_angular(np.array(0.0), G) == pytest.approx(expected, abs=1e-12)
    v = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(angular_to_gripper(gripper_to_angular(v, G), G), v, atol=1e-9)


def test_action_gripper_is_openpis_linear_map_and_round_trips():
    assert gripper_action_to_pi(np.array(0.0), G) == pytest.approx(-0.6213 - 0.5476)
    assert gripper_action_to_pi(np.array(1.0), G) == pytest.approx(1.4910 - 0.5476)
    y = np.linspace(-2, 2, 41)
    np.testing.assert_allclose(gripper_action_to_pi(gripper_action_from_pi(y, G), G), y, atol=1e-12)
    s, a = rig_sample()
    step = GripperToPi(CFG.gripper_dims, G)
    out = step.forward(Vectors(s, a))
    assert (out.state[[0, 5, 7, 12]] == s[[0, 5, 7, 12]]).all()  # joints untouched
    roundtrip(step, Vectors(s, a), tol=1e-9)


def test_delta_actions_joints_relative_grippers_absolute():
    s, a = rig_sample()
    d = DeltaActions(CFG.delta_mask).forward(Vectors(s, a))
    joints = [i for i in range(14) if i not in (6, 13)]
    np.testing.assert_allclose(d.actions[:, joints], a[:, joints] - s[joints], atol=1e-15)
    np.testing.assert_array_equal(d.actions[:, [6, 13]], a[:, [6, 13]])
    np.testing.assert_array_equal(d.state, s)
    roundtrip(DeltaActions(CFG.delta_mask), Vectors(s, a))


def test_normalize_is_openpis_zscore_and_round_trips():
    st = stats()
    s, a = rig_sample()
    n = Normalize(st["state"], st["actions"], 1e-6).forward(Vectors(s, a))
    np.testing.assert_allclose(n.state, (s - st["state"].mean) / (st["state"].std + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(n.actions, (a - st["actions"].mean) / (st["actions"].std + 1e-6), rtol=1e-12)
    roundtrip(Normalize(st["state"], st["actions"]), Vectors(s, a), tol=1e-12)


def test_normalize_accepts_openpi_stats_padded_to_32():
    st = stats()
    padded = {k: NormStats(np.r_[v.mean, np.zeros(18)], np.r_[v.std, np.ones(18)]) for k, v in st.items()}
    s, a = rig_sample()
    np.testing.assert_array_equal(Normalize(padded["state"], padded["actions"]).forward(Vectors(s, a)).actions,
                                  Normalize(st["state"], st["actions"]).forward(Vectors(s, a)).actions)


def test_pad_to_model_dims_and_back():
    s, a = rig_sample()
    p = PadTo(14, 32, 32).forward(Vectors(s, a))
    assert p.state.shape == (32,) and p.actions.shape == (50, 32)
    assert (p.state[14:] == 0).all() and (p.actions[:, 14:] == 0).all()
    roundtrip(PadTo(14, 32, 32), Vectors(s, a), tol=0)


def test_whole_chain_round_trips_and_serving_inverts_training():
    st = stats()
    chain = vector_chain(CFG, st)
    assert [type(t) for t in chain.steps] == [JointFlip, GripperToPi, DeltaActions, Normalize, PadTo]
    s, a = rig_sample()
    roundtrip(chain, Vectors(s, a), tol=1e-9)
    pt = PolicyTransforms(CFG, st)
    model_space = pt.state_actions(s, a)
    back = pt.actions(torch.from_numpy(model_space.actions).float(), s)  # the model's output type and precision
    assert back.shape == (50, 14)
    np.testing.assert_allclose(back, a, atol=2e-5)
    batched = pt.actions(np.stack([model_space.actions] * 3), np.stack([s] * 3))
    assert batched.shape == (3, 50, 14)
    np.testing.assert_allclose(batched[1], a, atol=2e-5)


def test_serving_refuses_the_wrong_joint_count():
    pt = PolicyTransforms(CFG, stats())
    with pytest.raises(ValueError, match="trained on 14"):
        pt.actions(np.zeros((50, 32)), np.zeros(12))


# -- configuration and files ------------------------------------------------------------------------------

def test_transform_config_json_and_norm_stats_in_openpi_layout(tmp_path):
    st = stats()
    pt = PolicyTransforms(CFG, {k: NormStats(v.mean, v.std, v.mean - 1, v.mean + 1) for k, v in st.items()})
    pt.save(tmp_path)
    body = json.loads((tmp_path / "norm_stats.json").read_text())
    assert set(body) == {"norm_stats"} and set(body["norm_stats"]) == {"state", "actions"}
    assert set(body["norm_stats"]["actions"]) == {"mean", "std", "q01", "q99"}
    again = PolicyTransforms.from_folder(tmp_path)
    assert again.config == CFG and TransformConfig.from_json(json.loads(json.dumps(CFG.to_json()))) == CFG
    np.testing.assert_array_equal(load_norm_stats(tmp_path)["state"].std, st["state"].std)
    s, a = rig_sample()
    np.testing.assert_array_equal(again.state_actions(s, a).actions, pt.state_actions(s, a).actions)
    bad = {**CFG.to_json(), "colour": 1}
    with pytest.raises(ValueError, match="unknown keys"):
        TransformConfig.from_json(bad)


# -- images --------------------------------------------------------------------------------------------------

def test_camera_renaming_masks_a_missing_camera_and_drops_cam_low():
    img = np.full((48, 64, 3), 200, np.uint8)
    by_slot, masks = rename_cameras({"cam_high": img, "cam_left_wrist": img, "cam_low": img}, CFG.camera_map,
                                    CFG.camera_slots)
    assert masks == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    assert by_slot["right_wrist_0_rgb"] is None
    tok = _FakeTokenizer()
    pt = PolicyTransforms(CFG, stats(), tok)
    obs = pt.observation(np.zeros(14), {"cam_high": img, "cam_left_wrist": img, "cam_low": img}, "pick it up")
    assert set(obs.images) == set(CFG.camera_slots)
    assert obs.image_masks["right_wrist_0_rgb"].tolist() == [False]
    assert obs.image_masks["base_0_rgb"].tolist() == [True]
    assert (obs.images["right_wrist_0_rgb"] == -1).all()  # black, and not attended
    assert obs.images["base_0_rgb"].shape == (1, 3, 56, 56) and obs.state.shape == (1, 32)
    assert obs.tokens.shape == (1, 48) and tok.seen == ["pick it up"]


class _FakeTokenizer:
    def __init__(self):
        self.seen = []

    def tokenize(self, prompt):
        from finetune.tokenizer import TokenizedPrompt

        self.seen.append(prompt)
        return TokenizedPrompt(np.arange(48, dtype=np.int64), np.arange(48) < 5)


def test_resize_with_pad_keeps_aspect_and_pads_black():
    img = np.full((480, 640, 3), 255, np.uint8)
    out = resize_with_pad(img, 224)
    assert out.shape == (224, 224, 3)
    rows = np.flatnonzero(out[:, 112, 0] > 0)
    assert (rows[0], rows[-1]) == (28, 195)  # 640x480 -> 224x168, 28 black rows above and below
    assert (out[:28] == 0).all() and (out[196:] == 0).all() and (out[28:196] == 255).all()
    tall = resize_with_pad(np.full((100, 50, 3), 255, np.uint8), 224)
    cols = np.flatnonzero(tall[112, :, 0] > 0)
    assert (cols[0], cols[-1]) == (56, 167)
    same = RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert (resize_with_pad(same, 224) == same).all()


def test_unit_range_scaling_round_trips():
    img = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    x = to_unit_range(img)
    assert x.shape == (3, 20, 30) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    assert to_unit_range(np.zeros((1, 1, 3), np.uint8)).min() == -1 and to_unit_range(
        np.full((1, 1, 3), 255, np.uint8)).max() == 1
    assert (from_unit_range(x) == img).all()


# -- chunks --------------------------------------------------------------------------------------------------

def test_chunk_padding_mask_at_the_episode_end():
    actions = np.arange(60, dtype=float)[:, None] * np.ones((1, 14))
    chunk, pad = action_chunk(actions, 57, 50)
    assert pad.tolist() == [False] * 3 + [True] * 47
    assert chunk[:3, 0].tolist() == [57, 58, 59] and (chunk[3:, 0] == 59).all()  # the last action repeated
    chunk, pad = action_chunk(actions, 0, 50)
    assert not pad.any() and chunk[:, 0].tolist() == list(range(50))
    idx, pad = chunk_indices(np.array([0, 59]), 60, 4)
    assert idx.tolist() == [[0, 1, 2, 3], [59, 59, 59, 59]] and pad[1].tolist() == [False, True, True, True]


# -- statistics -------------------------------------------------------------------------------------------------

def _episodes(constant_dim=None, n=3, t=80):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        s = np.cumsum(rng.normal(0, 0.05, (t, 14)), 0)
        s[:, [6, 13]] = rng.uniform(0.1, 0.9, (t, 2))
        a = s + rng.normal(0, 0.01, (t, 14))
        if constant_dim is not None:
            s[:, constant_dim] = a[:, constant_dim] = 0.25
        out.append((s, a))
    return out


def test_stats_are_computed_in_pi_space_over_unpadded_chunk_steps():
    eps = _episodes()
    res = compute_norm_stats(eps, CFG, dim_names=ALOHA_DIM_NAMES)
    chain = Chain((JointFlip(CFG.joint_flip), GripperToPi(CFG.gripper_dims, G), DeltaActions(CFG.delta_mask)))
    rows, states = [], []
    for s, a in eps:
        for t in range(len(s)):
            chunk, pad = action_chunk(a, t, 50)
            v = chain.forward(Vectors(s[t], chunk))
            rows.append(v.actions[~pad])
            states.append(v.state)
    rows, states = np.concatenate(rows), np.stack(states)
    np.testing.assert_allclose(res.stats["actions"].mean, rows.mean(0), atol=1e-10)
    np.testing.assert_allclose(res.stats["actions"].std, rows.std(0), atol=1e-10)
    np.testing.assert_allclose(res.stats["state"].mean, states.mean(0), atol=1e-10)
    np.testing.assert_allclose(res.stats["state"].q99, np.quantile(states, 0.99, axis=0), atol=1e-10)


def test_near_constant_dims_are_refused_naming_the_joint():
    with pytest.raises(NearConstantError, match=r"left_wrist_rotate \(dim 5") as e:
        compute_norm_stats(_episodes(constant_dim=5), CFG, dim_names=ALOHA_DIM_NAMES, low_std="error")
    assert "state/left_wrist_rotate" in str(e.value) and "actions/left_wrist_rotate" in str(e.value)
    assert "low_std='fix'" in str(e.value)


def test_near_constant_dims_fixed_are_centred_only_with_a_warning():
    with pytest.warns(NearConstantWarning, match="left_wrist_rotate"):
        res = compute_norm_stats(_episodes(constant_dim=5), CFG, dim_names=ALOHA_DIM_NAMES, low_std="fix")
    assert res.fixed == ("state/left_wrist_rotate", "actions/left_wrist_rotate")
    assert res.stats["state"].std[5] == 1.0 and res.stats["actions"].std[5] == 1.0
    assert (np.delete(res.stats["state"].std, 5) < 1.0).all()  # the others are untouched
    # a deviation at deployment stays of the order of the deviation instead of 1e6 times it
    pt = PolicyTransforms(CFG, res.stats)
    s = np.full(14, 0.5)
    s[5] = 0.25 + 0.1
    assert abs(pt.state_actions(s).state[5]) == pytest.approx(0.1, abs=1e-5)


# -- augmentation -----------------------------------------------------------------------------------------------

def test_augmentation_is_seeded_per_sample():
    img = RNG.integers(0, 256, (56, 56, 3), dtype=np.uint8)
    a1 = Augmenter(sample_rng(7, 2, 13))("base_0_rgb", img)
    a2 = Augmenter(sample_rng(7, 2, 13))("base_0_rgb", img)
    assert (a1 == a2).all()
    assert not (Augmenter(sample_rng(7, 2, 14))("base_0_rgb", img) == a1).all()
    assert not (Augmenter(sample_rng(7, 3, 13))("base_0_rgb", img) == a1).all()
    assert not (Augmenter(sample_rng(8, 2, 13))("base_0_rgb", img) == a1).all()
    assert not (a1 == img).all()


def test_wrist_cameras_get_colour_jitter_only():
    flat = np.full((56, 56, 3), 128, np.uint8)
    for i in range(5):
        wrist = Augmenter(sample_rng(0, 0, i))("left_wrist_0_rgb", flat)
        assert (wrist == wrist[0, 0]).all()  # no crop, no rotation: a flat image stays flat
        base = Augmenter(sample_rng(0, 0, i))("base_0_rgb", flat)
        assert not (base == base[28, 28]).all()  # rotation brings black corners in
    no_rot = Augmenter(sample_rng(0, 0, 0), AugmentConfig(max_rotation_deg=0.0))("base_0_rgb", flat)
    assert (no_rot == no_rot[0, 0]).all()  # crop + resize of a flat image is flat: the corners come from rotation
