"""What training knows of the recording rig comes from the episodes themselves: the rig facts a new episode
records (recorder.rig_info), or, for episodes recorded before that, their stored rig file text read by the
recorder's small TOML reader. The model side never imports the rig layer (workbench)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from drivers.arm import BIMANUAL_JOINT_NAMES
from drivers.gripper import GRIPPER_PRESETS
from finetune.data import DataConfig, build_training_data
from finetune.episodes import load_episodes, rig_snapshot
from finetune.model_config import Pi0Config
from recorder import format as fmt
from recorder.quality import QualityThresholds
from recorder.rig_info import RigInfo, gripper_dict
from recorder.store import DatasetStore
from tests.finetune.data_helpers import tiny_tokenizer
from tests.recorder.helpers import CAMS, tick

ROOT = Path(__file__).resolve().parents[2]
TOML = """[rig]
name = "my-aloha"
backend = "dynamixel"
control_hz = 50
gripper = "aloha2"
"""


def _store(root: Path, n: int = 2, **kw) -> DatasetStore:
    store = DatasetStore(root)
    for _ in range(n):
        w = store.new_episode(CAMS, task="transfer the cube", control_hz=50,
                              thresholds=QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0), **kw)
        for i in range(60):
            w.append(tick(i))
        w.stop()
    return store


def _make_old(store: DatasetStore) -> None:
    """Episodes as recorded before the rig_info attribute: the rig file's TOML text only."""
    for e in store.list():
        with h5py.File(store.path(e.name), "a") as f:
            del f.attrs[fmt.RIG_INFO_ATTR]


def test_an_old_episode_with_only_its_rig_file_still_trains(tmp_path):
    store = _store(tmp_path / "old", rig_config=TOML)
    _make_old(store)
    es = load_episodes(str(store.root))
    assert all(e.rig is None and e.rig_config == TOML for e in es.episodes)
    data = build_training_data(DataConfig(str(store.root), val_fraction=0.0), Pi0Config.variant("pi0_tiny"),
                               tiny_tokenizer(tmp_path / "sp"), batch_size=4, num_workers=0, seed=0)
    next(data.iterator(0))
    data.save(tmp_path / "run")
    rig = json.loads((tmp_path / "run" / "rig.json").read_text())
    assert (rig["name"], rig["backend"], rig["gripper_set"], rig["control_hz"]) == ("my-aloha", "dynamixel", "aloha2", 50)
    assert rig["gripper"] == gripper_dict(GRIPPER_PRESETS["aloha2"])
    assert rig["cameras"] == CAMS and rig["joint_names"] == list(BIMANUAL_JOINT_NAMES) and rig["rig_config"] == TOML


def test_the_recorded_rig_facts_are_what_training_uses(tmp_path):
    custom = dict(gripper_dict(GRIPPER_PRESETS["aloha1"]), start_threshold=-0.5)
    info = RigInfo("bench-rig", "virtual", 50.0, tuple(CAMS), BIMANUAL_JOINT_NAMES, "custom", custom)
    store = _store(tmp_path / "new", rig_config=TOML, rig_info=info)
    es = load_episodes(str(store.root))
    assert all(e.rig == info for e in es.episodes)
    snap = rig_snapshot(es)
    assert (snap.name, snap.backend, snap.gripper_set, snap.gripper) == ("bench-rig", "virtual", "custom", custom)


def test_an_unreadable_rig_file_warns_and_leaves_the_gripper_unknown(tmp_path):
    store = _store(tmp_path / "bad", n=1, rig_config="[rig]\ngripper = 'no-such-preset'\n")
    es = load_episodes(str(store.root))
    with pytest.warns(UserWarning, match="stored rig config could not be read"):
        snap = rig_snapshot(es)
    assert (snap.gripper_set, snap.gripper, snap.name) == ("unknown", None, "bad")


def test_the_model_side_imports_no_workbench_module():
    code = ("import sys, finetune.episodes, finetune.lerobot_source, finetune.data, finetune.train, finetune.runtime, "
            "finetune.replay_policy; print(sorted(m for m in sys.modules if m.split('.')[0] == 'workbench'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]", f"finetune pulled in the rig layer: {r.stdout}"
