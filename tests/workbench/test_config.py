"""Rig configuration: presets load, and every kind of mistake names the file, the key and the fix."""
import pytest

from drivers.gripper import GRIPPER_PRESETS
from workbench.config import PRESETS, ConfigError, load_rig_config, parse_rig_config, preset_text


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = load_rig_config(name)
    assert cfg.control_hz == 50
    assert cfg.source == f"preset:{name}"
    if cfg.backend != "sim":
        assert {(a.role, a.side) for a in cfg.arms} == {(r, s) for r in ("leader", "follower") for s in ("left", "right")}


def test_aloha2_gripper_constants_selectable():
    text = preset_text("aloha").replace('gripper = "aloha1"', 'gripper = "aloha2"')
    assert parse_rig_config(text).gripper == GRIPPER_PRESETS["aloha2"]


def _err(text, tmp_path):
    path = tmp_path / "rig.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rig_config(path)
    assert str(path) in str(e.value)
    return e.value


def test_unknown_key_is_named(tmp_path):
    e = _err(preset_text("aloha").replace("control_hz = 50", "control_hz = 50\ncontrol_rate = 50"), tmp_path)
    assert e.key == "rig.control_rate" and "unknown key" in e.problem


def test_missing_port(tmp_path):
    e = _err(preset_text("aloha").replace('port = "/dev/ttyDXL_leader_left"\n', ""), tmp_path)
    assert e.key == "arms.leader_left.port" and "missing" in e.problem


def test_duplicate_port(tmp_path):
    e = _err(preset_text("aloha").replace("/dev/ttyDXL_leader_right", "/dev/ttyDXL_leader_left"), tmp_path)
    assert e.key == "arms.leader_right.port" and "leader_left" in e.problem


def test_realsense_fps_it_cannot_do(tmp_path):
    text = preset_text("aloha").replace('kind = "opencv"\ndevice = "/dev/CAM_HIGH"\nfps = 30',
                                        'kind = "realsense"\nserial = "123"\nfps = 50')
    e = _err(text, tmp_path)
    assert e.key == "cameras.cam_high.fps" and "60" in e.problem


def test_missing_arm_side(tmp_path):
    text = preset_text("virtual").split("[arms.follower_right]")[0] + "\n[cameras.cam_high]\nkind = \"synthetic\"\n"
    e = _err(text, tmp_path)
    assert "follower" in e.problem and "right" in e.problem


def test_syntax_error(tmp_path):
    e = _err("[rig\nbackend = sim", tmp_path)
    assert e.key == "(syntax)"


def test_not_a_file_nor_preset():
    with pytest.raises(ConfigError, match="not a preset"):
        load_rig_config("/nonexistent/rig.toml")


def test_bad_safety_values(tmp_path):
    e = _err(preset_text("sim-transfer-cube") + '\n[safety]\nestop_action = "explode"\n', tmp_path)
    assert e.key == "safety.estop_action"
    e = _err(preset_text("sim-transfer-cube") + "\n[safety]\njoint_limits = { elbow = [1.0, -1.0] }\n", tmp_path)
    assert "elbow" in str(e)


def test_sim_camera_faster_than_control_rate(tmp_path):
    e = _err(preset_text("sim-transfer-cube").replace("fps = 50", "fps = 60", 1), tmp_path)
    assert e.key == "cameras.cam_high.fps"


def test_rt_priority_default_and_range(tmp_path):
    assert load_rig_config("virtual").rt_priority == 50
    text = preset_text("virtual").replace('backend = "virtual"', 'backend = "virtual"\nrt_priority = 0')
    assert parse_rig_config(text, "x.toml").rt_priority == 0
    e = _err(preset_text("virtual").replace('backend = "virtual"', 'backend = "virtual"\nrt_priority = 120'), tmp_path)
    assert e.key == "rig.rt_priority" and "outside" in str(e)


def test_unknown_arm_model_is_refused_naming_the_known_ones(tmp_path, capsys):
    from drivers.dynamixel.layout import ARM_MODELS
    from workbench.cli import main

    e = _err(preset_text("aloha").replace('model = "vx300s"', 'model = "vx999"', 1), tmp_path)
    assert e.key == "arms.follower_left.model" and "'vx999'" in e.problem
    assert all(m in e.problem for m in ARM_MODELS)
    e = _err(preset_text("virtual").replace('model = "wx250s"', 'model = "vx999"', 1), tmp_path)
    assert e.key == "arms.leader_left.model"
    # `workbench rig check` refuses it (exit 2, the message on stderr)
    assert main(["rig", "check", str(tmp_path / "rig.toml")]) == 2
    assert "unknown arm model 'vx999'" in capsys.readouterr().err
    for m in ARM_MODELS:  # the known models still load
        parse_rig_config(preset_text("aloha").replace('model = "vx300s"', f'model = "{m}"'), "x.toml")
