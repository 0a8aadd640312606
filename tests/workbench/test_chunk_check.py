"""The wild-chunk check (workbench.deploy.chunk_check) and the trained range a policy server announces
(finetune.runtime.action_bounds): each refusal with its reason, and the bounds converted exactly from pi0's space
(joint flips, gripper conversion, delta joints) to rig units."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.deploy.chunk_check import (FIRST_ACTION_STEPS, VELOCITY_TOLERANCE, ChunkBounds, ChunkLimits,
                                          check_chunk, parse_action_bounds)
from workbench.safety import SafetyConfig

H = 50
LO = np.array([-3.14, -1.85, -1.76, -3.14, -1.87, -3.14, 0.0] * 2)
HI = np.array([3.14, 1.26, 1.61, 3.14, 2.23, 3.14, 1.0] * 2)
STEP = np.tile(SafetyConfig().step_array(50.0), 2)  # 0.0628 rad (3.14 rad/s at 50 Hz), gripper 0.2
STATE = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)


def bounds(**kw) -> ChunkBounds:
    return ChunkBounds(LO, HI, STEP, **kw)


def ramp(rate: float = 0.004) -> np.ndarray:
    a = np.tile(STATE, (H, 1))
    a[:, 0] += rate * np.arange(H)
    return a


def refusal(actions, b=None, current=STATE, entry=0, replaced=None, state=STATE):
    return check_chunk(actions, b or bounds(), state=state, current=current, entry=entry, replaced=replaced).refusal


def test_a_sane_chunk_passes_with_its_figures():
    c = check_chunk(ramp(), bounds(), state=STATE, current=STATE, entry=3, replaced=STATE + 0.01)
    assert c.ok and c.jump == pytest.approx(0.012) and c.mismatch == pytest.approx(0.01)
    assert c.max_step == pytest.approx(0.004)


@pytest.mark.parametrize("what,kind,words", [
    ("nan", "non_finite", "left_shoulder is nan at action 7"),
    ("inf", "non_finite", "right_shoulder is inf at action 0"),
    ("shape", "shape", "actions of shape [50, 7], need [H, 14]"),
    ("empty", "shape", "actions of shape [0, 14]"),
    ("huge", "joint_limits", "left_shoulder asks for 1e+06 rad at action 0, outside its joint limits "
                             "[-1.850, 1.260]"),
    ("gripper", "joint_limits", "right_gripper asks for 1.5 at action 0"),
    ("alternating", "jump", "left_waist: its first action is 3.000 rad from the current command (at most 0.251: "
                            "4 step caps)"),
    ("thrash", "velocity", "left_waist moves 0.200 rad between actions 0 and 1 (at most 0.126 per tick: 2 x the "
                           "velocity limit)"),
])
def test_each_wild_chunk_is_refused_with_its_reason(what, kind, words):
    a = ramp()
    if what == "nan":
        a[7, 1] = np.nan
    elif what == "inf":
        a[:, 8] = np.inf
    elif what == "shape":
        a = a[:, :7]
    elif what == "empty":
        a = a[:0]
    elif what == "huge":
        a[:, 1] = 1e6
    elif what == "gripper":
        a[:, 13] = 1.5
    elif what == "alternating":
        a[:, 0] = np.where(np.arange(H) % 2, -3.0, 3.0)
    elif what == "thrash":
        a[:, 0] = STATE[0] + np.where(np.arange(H) % 2, 0.2, 0.0)
    r = refusal(a)
    assert r is not None and r.kind == kind and words in r.reason, r
    assert r.to_json()["kind"] == kind


def test_grippers_may_open_and_close_at_once():
    """Demonstrations snap a gripper open or shut (the scripted ones 0.5 per tick): no motion check on grippers,
    only their limits (the safety layer caps their step)."""
    a = ramp()
    a[:, 6] = np.where(np.arange(H) < 10, 0.0, 1.0)
    assert refusal(a) is None and refusal(a, current=np.r_[STATE[:6], 1.0, STATE[7:]], entry=0) is None


def test_joint_limits_allow_a_small_tolerance():
    a = ramp()
    a[:, 6] = -0.05  # a gripper squeezing a little past closed (GRIPPER_LIMIT_TOLERANCE)
    assert refusal(a) is None
    a[:, 6] = 1.12  # measured: CPU-trained policies overshooting open (1.03-1.12; 0.1 refused the closed loop's)
    assert refusal(a) is None
    a[:, 6] = -0.3
    assert refusal(a).kind == "joint_limits"
    a[:, 6] = 1.3  # past the gripper's tolerance: a wild value is refused, not clamped
    assert refusal(a).kind == "joint_limits"
    a = ramp()
    a[:, 1] = a[:, 1] + 10.0  # an arm joint far outside (JOINT_LIMIT_TOLERANCE stays 0.02 rad there)
    assert refusal(a).kind == "joint_limits"


def test_the_first_action_is_checked_against_the_command_and_the_plan_it_replaces():
    a = ramp()
    far = STATE.copy()
    far[1] += FIRST_ACTION_STEPS * STEP[1] + 0.01
    assert refusal(a, current=far).kind == "jump"
    assert refusal(a, current=far, entry=len(a)) is None  # nothing of it would run: no first action to judge
    r = refusal(a, replaced=far)  # async: the running plan would have gone on elsewhere
    assert r.kind == "mismatch" and "from the plan it replaces" in r.reason
    assert refusal(a, current=None) is None  # nothing commanded yet


def test_the_trained_range_is_relative_to_the_observed_state_for_delta_joints():
    rel = np.array([True] * 6 + [False] + [True] * 6 + [False])
    b = bounds(trained_lo=np.where(rel, -0.25, 0.1), trained_hi=np.where(rel, 0.25, 0.9), relative=rel)
    a = ramp()
    assert refusal(a, b) is None  # the waist goes 0.196 rad from the state
    moved = STATE + 0.5  # the same chunk computed from another state is far from it
    moved[[6, 13]] = STATE[[6, 13]]
    r = refusal(a, b, state=moved)
    assert r.kind == "trained_range" and "-0.500 rad from the observed state" in r.reason
    a[:, 6] = 0.95  # a gripper (absolute) beyond the trained 0.9
    r = refusal(a, b)
    assert r.kind == "trained_range" and r.joint == "left_gripper" and "0.950" in r.reason
    assert refusal(a, bounds()) is None  # no range announced (a replay policy): not checked


def test_limits_tolerances_and_validation():
    a = ramp()
    a[:, 0] = STATE[0] + np.where(np.arange(H) % 2, 0.2, 0.0)
    assert refusal(a, bounds(limits=ChunkLimits(velocity_tolerance=4.0))) is None
    assert VELOCITY_TOLERANCE * STEP[0] < 0.2 < 4.0 * STEP[0]
    with pytest.raises(ValueError):
        ChunkLimits(first_action_steps=0)
    with pytest.raises(ValueError):
        ChunkLimits(limit_tolerance=-1)


def test_bounds_for_a_rig_come_from_its_safety_layer_and_the_announced_range(sim_rig):
    rig = sim_rig
    meta = {"action_bounds": {"lo": [-0.2] * 14, "hi": [0.2] * 14, "relative": [True] * 14}}
    b = ChunkBounds.for_rig(rig.safety, rig.follower_names, 50.0, meta)
    lo, hi = rig.safety.limits(rig.follower_names[0])
    assert np.array_equal(b.lo[:7], lo) and np.array_equal(b.hi[:7], hi)
    assert np.allclose(b.step, STEP) and b.announced and b.relative.all()
    assert not ChunkBounds.for_rig(rig.safety, rig.follower_names, 50.0, meta,
                                   ChunkLimits(trained_range=False)).announced
    # a malformed announcement is ignored (the joint limits and motion checks still apply)
    for bad in ({"lo": [0.0] * 13, "hi": [1.0] * 13}, {"lo": [1.0] * 14, "hi": [0.0] * 14}, "wide", None,
                {"lo": ["x"] * 14, "hi": [1.0] * 14}):
        assert not ChunkBounds.for_rig(rig.safety, rig.follower_names, 50.0, {"action_bounds": bad}).announced
        assert parse_action_bounds(bad) is None


def test_action_bounds_convert_the_training_quantiles_to_rig_units_exactly():
    """Model actions at q01 / q99 of the statistics, through the serving transforms, land on the announced bounds
    (before the margin): relative ones as offsets from the state, the grippers absolute."""
    from finetune.model_config import OPENPI_CAMERAS
    from finetune.normalize import NormStats
    from finetune.runtime import ACTION_BOUND_FLOOR, ACTION_BOUND_MARGIN, action_bounds
    from finetune.transforms import PolicyTransforms, TransformConfig

    cfg = TransformConfig(camera_slots=OPENPI_CAMERAS)
    rng = np.random.default_rng(0)
    q01 = rng.uniform(-0.6, -0.1, 14)
    q99 = q01 + rng.uniform(0.2, 0.8, 14)
    q01[[6, 13]], q99[[6, 13]] = -0.6, 0.9  # pi0 gripper actions (joint - offset)
    mean, std = (q01 + q99) / 2, (q99 - q01) / 4
    stats = {"state": NormStats(np.zeros(14), np.ones(14)), "actions": NormStats(mean, std, q01, q99)}
    pt = PolicyTransforms(cfg, stats)
    b = action_bounds(cfg, stats["actions"], margin=0.0, floor=0.0)
    assert b["relative"] == [True] * 6 + [False] + [True] * 6 + [False]
    state = STATE + 0.1
    rig = []
    for q in (q01, q99):
        model = np.zeros((1, 32))
        model[0, :14] = (q - mean) / (std + cfg.norm_eps)
        rig.append(pt.actions(model, state)[0].astype(np.float64))
    rel = np.array(b["relative"])
    lo, hi = np.minimum(*rig), np.maximum(*rig)
    lo, hi = np.where(rel, lo - state, lo), np.where(rel, hi - state, hi)
    assert np.allclose(b["lo"], lo, atol=1e-5) and np.allclose(b["hi"], hi, atol=1e-5)
    # the shoulder and elbow are flipped: pi0's q01 is the rig's upper bound
    assert b["hi"][1] == pytest.approx(-q01[1]) and b["lo"][1] == pytest.approx(-q99[1])
    # widened by the margin (a share of the span) or the floor, whichever is more
    w = action_bounds(cfg, stats["actions"])
    span = np.array(b["hi"]) - np.array(b["lo"])
    widen = np.maximum(ACTION_BOUND_MARGIN * span, ACTION_BOUND_FLOOR)
    assert np.allclose(np.array(b["lo"]) - widen, w["lo"]) and np.allclose(np.array(b["hi"]) + widen, w["hi"])
    assert action_bounds(cfg, NormStats(mean, std)) is None  # no quantiles: nothing announced
