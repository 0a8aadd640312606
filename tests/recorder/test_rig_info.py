"""The rig facts an episode records (recorder.rig_info, attribute recorder.format.RIG_INFO_ATTR): written by the
writer, kept through crash recovery, read back by the reader; and older episodes, which carry only their rig
file's TOML text, read through the lower-layer TOML reader."""
from __future__ import annotations

import json

import h5py
import pytest

from drivers.arm import BIMANUAL_JOINT_NAMES
from drivers.gripper import GRIPPER_PRESETS
from recorder import format as fmt
from recorder.reader import EpisodeReader, read_info
from recorder.recovery import recover_dataset
from recorder.rig_info import RigInfo, gripper_dict, rig_info_from_toml
from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, tick

SIM_TOML = """[rig]
name = "sim-transfer-cube"
backend = "sim"
control_hz = 50
gripper = "aloha1"

[cameras.cam_high]
kind = "sim"

[cameras.cam_left_wrist]
kind = "sim"
"""
INFO = RigInfo(name="bench-rig", backend="dynamixel", control_hz=50.0, cameras=tuple(CAMS),
               joint_names=BIMANUAL_JOINT_NAMES, gripper_set="aloha2", gripper=gripper_dict(GRIPPER_PRESETS["aloha2"]))


def _record(store: DatasetStore, steps: int = 20, **kw):
    w = store.new_episode(CAMS, task="t", control_hz=50, **kw)
    for i in range(steps):
        w.append(tick(i))
    return w


def test_a_new_episode_carries_the_rig_facts(tmp_path):
    saved = _record(DatasetStore(tmp_path), rig_config=SIM_TOML, rig_info=INFO).stop()
    with h5py.File(saved.path, "r") as f:
        stored = json.loads(f.attrs[fmt.RIG_INFO_ATTR])
    assert stored == {"name": "bench-rig", "backend": "dynamixel", "control_hz": 50.0, "cameras": CAMS,
                      "joint_names": list(BIMANUAL_JOINT_NAMES), "gripper_set": "aloha2",
                      "gripper": gripper_dict(GRIPPER_PRESETS["aloha2"])}
    info = read_info(saved.path)
    assert info.rig_info == INFO and info.rig() == INFO  # the recorded facts win over the rig file text
    assert fmt.RIG_INFO_ATTR not in info.extra


def test_the_rig_file_alone_gives_the_facts_at_record_time(tmp_path):
    """A caller that passes only the rig file text (rig_config) still records the facts, with its own cameras."""
    saved = _record(DatasetStore(tmp_path), rig_config=SIM_TOML).stop()
    info = read_info(saved.path)
    assert info.rig_info == RigInfo("sim-transfer-cube", "sim", 50.0, tuple(CAMS), BIMANUAL_JOINT_NAMES, "aloha1",
                                    gripper_dict(GRIPPER_PRESETS["aloha1"]))


def test_without_a_rig_there_is_no_rig_info(tmp_path):
    saved = _record(DatasetStore(tmp_path)).stop()
    info = read_info(saved.path)
    assert info.rig_info is None and info.rig() is None
    with h5py.File(saved.path, "r") as f:
        assert fmt.RIG_INFO_ATTR not in f.attrs


def test_rig_info_is_reserved(tmp_path):
    w = _record(DatasetStore(tmp_path), steps=2)
    with pytest.raises(ValueError, match="recorder writes itself"):
        w.set_extra_attrs({fmt.RIG_INFO_ATTR: "x"})
    w.discard()


def test_recovery_after_a_crash_keeps_the_rig_facts(tmp_path):
    w = _record(DatasetStore(tmp_path), steps=30, rig_config=SIM_TOML, rig_info=INFO)
    w._shutdown()  # a crash after the journal is complete but before publishing
    w._journal.abandon()
    w._builder.close()
    res = recover_dataset(tmp_path)
    assert len(res.recovered) == 1
    assert read_info(res.recovered[0].path).rig_info == INFO


def test_an_old_episode_reads_its_facts_from_the_rig_file(tmp_path):
    """Episodes recorded before the attribute: only the rig TOML text; a custom [gripper] table is read too."""
    custom = dict(gripper_dict(GRIPPER_PRESETS["mobile_aloha"]), start_threshold=-1.0)
    toml = SIM_TOML.replace('gripper = "aloha1"\n', "").replace('backend = "sim"', 'backend = "dynamixel"') + (
        "\n[gripper]\n" + "".join(f"{k} = {v}\n" for k, v in custom.items()))
    saved = _record(DatasetStore(tmp_path), rig_config=toml).stop()
    with h5py.File(saved.path, "a") as f:  # as written before the attribute existed
        del f.attrs[fmt.RIG_INFO_ATTR]
    with EpisodeReader(saved.path) as r:
        assert r.info.rig_info is None
        rig = r.info.rig()
    assert rig == RigInfo("sim-transfer-cube", "dynamixel", 50.0, tuple(CAMS), BIMANUAL_JOINT_NAMES, "custom", custom)


def test_the_toml_reader_defaults_and_refusals():
    bare = rig_info_from_toml('[rig]\nbackend = "virtual"\n', default_name="mine")
    assert (bare.name, bare.backend, bare.control_hz, bare.gripper_set, bare.cameras) == ("mine", "virtual", 50.0,
                                                                                          "aloha1", ())
    for text, why in [("not = [toml", "not valid TOML"), ("[sim]\nseed = 1\n", r"no \[rig\] table"),
                      ('[rig]\ngripper = "nope"\n', "not one of"), ("[rig]\n[gripper]\nstart_threshold = 0\n", "lacks")]:
        with pytest.raises(ValueError, match=why):
            rig_info_from_toml(text)
    assert RigInfo.from_json(INFO.to_json()) == INFO
    with pytest.raises(ValueError):
        RigInfo.from_json({"name": "x"})
