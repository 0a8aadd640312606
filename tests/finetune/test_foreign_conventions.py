"""The pieces behind serving a foreign policy, each against the formula of the code base it comes from: LeRobot's
normalization modes (foreign_helpers writes them out from its normalize_processor.py), its relative-action mask,
the camera mapping, and the rig check's joint count and camera subset."""
from __future__ import annotations

import numpy as np
import pytest

from finetune.foreign_policy import ForeignOptions, ForeignPolicyError, map_cameras
from finetune.foreign_transforms import FeatureNorm, ForeignStatsError, lerobot_relative_mask
from finetune.rig_check import RigDescription, compare_rigs
from foreign_helpers import JOINT_NAMES, aloha_stats, lerobot_normalize, lerobot_unnormalize
from workbench.config import load_rig_config


@pytest.mark.parametrize("mode", ["MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10"])
def test_each_lerobot_mode_normalizes_and_unnormalizes_as_lerobot(mode):
    rng = np.random.default_rng(0)
    s = aloha_stats(rng)
    s["max"][4] = s["min"][4]  # a zero span: LeRobot divides by eps there
    s["q99"][4] = s["q01"][4]
    s["q90"][4] = s["q10"][4]
    n = FeatureNorm.from_stats(mode, s, 1e-8, 14, "x")
    x = rng.normal(0, 1, (5, 14))
    np.testing.assert_allclose(n.forward(x), lerobot_normalize(x, mode, s), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(n.output(x), lerobot_unnormalize(x, mode, s), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(n.output_inverse(n.output(x)), x, atol=1e-6)
    np.testing.assert_allclose(n.forward_inverse(n.forward(x)), x, atol=1e-6)  # a zero span scales by 1 / eps


def test_identity_and_bad_statistics():
    n = FeatureNorm.from_stats("identity", {}, 1e-8, 3, "x")
    assert n.mode == "IDENTITY" and np.allclose(n.output(np.arange(3.0)), np.arange(3.0))
    with pytest.raises(ForeignStatsError, match="'LINEAR' is not one LeRobot has"):
        FeatureNorm.from_stats("LINEAR", {}, 1e-8, 3, "x")
    with pytest.raises(ForeignStatsError, match=r"x\.std is negative at dims \[1\]"):
        FeatureNorm.from_stats("MEAN_STD", {"mean": np.zeros(3), "std": np.array([1.0, -1.0, 1.0])}, 1e-8, 3, "x")
    with pytest.raises(ForeignStatsError, match=r"x: max < min at dims \[2\]"):
        FeatureNorm.from_stats("MIN_MAX", {"min": np.zeros(3), "max": np.array([1.0, 1.0, -1.0])}, 1e-8, 3, "x")


def test_relative_mask_is_lerobots():
    assert lerobot_relative_mask(14, JOINT_NAMES, ["gripper"]) == tuple("gripper" not in n for n in JOINT_NAMES)
    assert lerobot_relative_mask(14, None, ["gripper"]) == (True,) * 14  # no names: every dim
    assert lerobot_relative_mask(14, JOINT_NAMES[:10], ["gripper"])[10:] == (True,) * 4  # short names: padded True
    assert lerobot_relative_mask(14, JOINT_NAMES, []) == (True,) * 14


def test_camera_mapping():
    rig = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    assert map_cameras(["top", "empty_camera_0"], rig) == {"top": "cam_high"}
    assert map_cameras(["left_wrist", "right_wrist", "cam_low"], rig) == \
        {"left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist", "cam_low": "cam_low"}
    # the preprocessor renamed the dataset's "wrist_l" to the policy's "image2": its rename map says which it was
    assert map_cameras(["image2"], ("wrist_l",), renamed={"image2": "wrist_l"}) == {"image2": "wrist_l"}
    with pytest.raises(ForeignPolicyError, match=r"cameras \['front'\] to a rig camera.*--camera-map front="):
        map_cameras(["top", "front"], rig)
    with pytest.raises(ForeignPolicyError, match="both map to rig camera 'cam_high'"):
        map_cameras(["top", "cam_high"], rig)
    with pytest.raises(ForeignPolicyError, match="names \\['side'\\], which policy does not read"):
        map_cameras(["top"], rig, explicit={"side": "cam_low"})
    with pytest.raises(ForeignPolicyError, match="the rig has no camera 'cam_side'"):
        map_cameras(["top"], rig, explicit={"top": "cam_side"})
    assert ForeignOptions.parse_camera_map(" top=cam_high, wrist=cam_left_wrist ") == \
        {"top": "cam_high", "wrist": "cam_left_wrist"}
    with pytest.raises(ValueError, match="POLICY_CAMERA=RIG_CAMERA"):
        ForeignOptions.parse_camera_map("top:cam_high")


def test_the_rig_check_of_a_foreign_policy_compares_the_joint_count_and_only_its_cameras():
    rig = load_rig_config("sim-transfer-cube")
    ok = compare_rigs(RigDescription(("cam_high",), joint_count=14, camera_subset=True), rig)
    assert ok.ok and "joint count (14)" in ok.checked and ok.notes
    bad = compare_rigs(RigDescription(("cam_high",), joint_count=12, camera_subset=True), rig)
    assert bad.differences == ["joint count: policy 12, rig 14"]
    # our own policies: the exact camera list, as before (a rig camera the policy was not trained with: refused)
    ours = compare_rigs(RigDescription(("cam_high", "cam_left_wrist")), rig)
    assert not ours.ok and "not in training ['cam_right_wrist']" in ours.differences[0]


def test_a_full_size_lerobot_config_names_pi0s_architecture():
    """Without --config the architecture comes from config.json (both LeRobot generations): gemma_2b + gemma_300m +
    SigLIP So400m, the dims and horizon as saved; the slots are its cameras."""
    from finetune.foreign_policy import _lerobot_model_config
    from finetune.model_config import Pi0Config

    pi0 = Pi0Config.variant("pi0")
    for cfg_json in ({"type": "pi0", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
                      "chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32, "tokenizer_max_length": 48,
                      "num_inference_steps": 10, "image_resolution": [224, 224], "dtype": "bfloat16"},
                     {"type": "pi0", "chunk_size": 30, "max_state_dim": 32, "max_action_dim": 32, "num_steps": 10,
                      "resize_imgs_with_padding": [224, 224], "adapt_to_pi_aloha": True}):
        cfg = _lerobot_model_config(cfg_json, ("top",), ForeignOptions())
        assert (cfg.paligemma, cfg.expert, cfg.vision, cfg.vocab_size) == \
            (pi0.paligemma, pi0.expert, pi0.vision, pi0.vocab_size)
        assert cfg.camera_names == ("top",) and cfg.action_horizon == cfg_json["chunk_size"]
    with pytest.raises(ForeignPolicyError, match=r"image resolution \[256, 256\]"):
        _lerobot_model_config({"type": "pi0", "image_resolution": [256, 256]}, ("top",), ForeignOptions())
