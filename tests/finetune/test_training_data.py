"""Training data on real episodes: recorded on the simulated rig with `workbench record`, read through real
DataLoader workers; exact resume, ranks, prompts, selection, LeRobot v3.0 input, and the errors a user meets."""
from __future__ import annotations

import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch

from finetune.model_config import Pi0Config
from finetune.data import DataConfig, StepBatchSampler, build_training_data, load_dataset_record
from finetune.episode_set import EpisodeDataError
from finetune.episodes import split_episodes
from finetune.model.pi0 import Observation
from finetune.transforms import PolicyTransforms
from drivers.cameras.resize import resize_with_pad
from finetune.transforms.images import to_unit_range
from recorder.reader import EpisodeReader
from recorder.segments import subtask_per_step
from recorder.store import DatasetStore
from tests.finetune.data_helpers import tiny_tokenizer

MODEL = Pi0Config.variant("pi0_tiny")  # 56 px cameras, 3 slots, 32-dim state/actions, horizon 50
TASK = "transfer the cube"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def sim_ds():
    """Three 100-step episodes on the sim rig (3 cameras at 320x240, demonstrator phases as segments): the
    session's shared recording (read only here)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_helpers import sim_dataset

    return sim_dataset()


def build(source, tok, batch_size=4, num_workers=0, seed=0, **cfg):
    cfg.setdefault("val_fraction", 0.0)
    return build_training_data(DataConfig(str(source), **cfg), MODEL, tok, batch_size=batch_size,
                               num_workers=num_workers, seed=seed)


def take(it, n):
    return [next(it) for _ in range(n)]


def same_batch(a, b) -> None:
    oa, ob = a["observation"], b["observation"]
    for k in oa.images:
        assert torch.equal(oa.images[k], ob.images[k]), k
    for k in ("tokens", "token_mask", "state"):
        assert torch.equal(getattr(oa, k), getattr(ob, k)), k
    for k in ("actions", "action_is_pad", "episode_index", "frame_index"):
        assert torch.equal(a[k], b[k]), k


# -- the loader on real episodes -------------------------------------------------------------------------------

def test_batches_from_sim_episodes_with_two_workers(sim_ds, tok):
    data = build(sim_ds, tok, batch_size=4, num_workers=2)
    assert data.episodes == ("episode_0", "episode_1", "episode_2") and data.train_samples == 300
    batches = take(data.iterator(0), 3)
    b = batches[0]
    obs = b["observation"]
    assert isinstance(obs, Observation) and set(obs.images) == set(MODEL.camera_names)
    for k, img in obs.images.items():
        assert img.shape == (4, 3, 56, 56) and img.dtype == torch.float32
        assert img.min() >= -1 and img.max() <= 1 and obs.image_masks[k].all()
    assert obs.state.shape == (4, 32) and (obs.state[:, 14:] == 0).all()
    assert b["actions"].shape == (4, 50, 32) and b["actions"].dtype == torch.float32
    assert (b["actions"][..., 14:] == 0).all() and torch.isfinite(b["actions"]).all()
    assert b["action_is_pad"].shape == (4, 50) and b["action_is_pad"].dtype == torch.bool
    assert obs.tokens.shape == (4, 48) and (obs.tokens[:, 0] == tok.sp.bos_id()).all()
    pt = data.transforms()
    for b in batches:
        for i in range(4):
            t = int(b["frame_index"][i])
            expected_pad = [t + k >= 100 for k in range(50)]  # past the end of a 100-step episode
            assert b["action_is_pad"][i].tolist() == expected_pad
            # the normalized chunk goes back to the recorded leader actions through the serving chain
            back = pt.actions(b["actions"][i], b["state_rig"][i])
            valid = ~b["action_is_pad"][i]
            np.testing.assert_allclose(back[valid.numpy()], b["actions_rig"][i][valid].numpy(), atol=1e-4)
    # the same samples with 0 workers: decoding, augmentation and prompts do not depend on the worker
    again = take(build(sim_ds, tok, batch_size=4, num_workers=0).iterator(0), 3)
    for x, y in zip(batches, again):
        same_batch(x, y)


def test_images_are_the_recorded_frames_resized_with_padding(sim_ds, tok):
    data = build(sim_ds, tok, batch_size=2, augment=False)
    b = next(data.iterator(0))
    e, t = int(b["episode_index"][0]), int(b["frame_index"][0])
    with EpisodeReader(sim_ds / f"{data.episodes[e]}.hdf5") as r:
        expected = to_unit_range(resize_with_pad(r.image("cam_left_wrist", t), 56))
        state = r.qpos[t]
    assert torch.equal(b["observation"].images["left_wrist_0_rgb"][0], torch.from_numpy(expected))
    assert (b["observation"].images["base_0_rgb"][0, :, :7] == -1).all()  # 320x240 -> 56x42: 7 black rows on top
    np.testing.assert_allclose(b["state_rig"][0].numpy(), state, atol=1e-6)


def test_resume_at_a_step_gives_the_same_batches(sim_ds, tok):
    data = build(sim_ds, tok, batch_size=4, num_workers=2)
    straight = take(data.iterator(0), 6)
    resumed = take(data.iterator(4), 2)  # the same persistent workers, restarted at step 4
    same_batch(straight[4], resumed[0])
    same_batch(straight[5], resumed[1])
    fresh = take(build(sim_ds, tok, batch_size=4, num_workers=0).iterator(5), 1)  # a new process after a crash
    same_batch(straight[5], fresh[0])


def test_two_ranks_see_the_single_process_batch(sim_ds, tok):
    one = take(build(sim_ds, tok, batch_size=4).iterator(0), 3)
    r0 = take(build_training_data(DataConfig(str(sim_ds), val_fraction=0.0), MODEL, tok, batch_size=2,
                                  num_workers=0, seed=0, rank=0, world_size=2).iterator(0), 3)
    r1 = take(build_training_data(DataConfig(str(sim_ds), val_fraction=0.0), MODEL, tok, batch_size=2,
                                  num_workers=0, seed=0, rank=1, world_size=2).iterator(0), 3)
    for full, a, b in zip(one, r0, r1):
        assert torch.equal(full["actions"], torch.cat([a["actions"], b["actions"]]))
        assert torch.equal(full["observation"].images["base_0_rgb"],
                           torch.cat([a["observation"].images["base_0_rgb"], b["observation"].images["base_0_rgb"]]))


def test_sampler_epochs_are_seeded_permutations():
    s = StepBatchSampler(10, 3, seed=5)
    keys = [k for step in range(10) for k in s.keys(step)]  # 30 samples = 3 epochs
    for epoch in range(3):
        idx = [i for i, e in keys[epoch * 10:(epoch + 1) * 10]]
        assert sorted(idx) == list(range(10)) and {e for _, e in keys[epoch * 10:(epoch + 1) * 10]} == {epoch}
    assert [i for i, _ in keys[:10]] != [i for i, _ in keys[10:20]]
    assert StepBatchSampler(10, 3, seed=5).keys(7) == s.keys(7)
    assert StepBatchSampler(10, 3, seed=6).keys(0) != s.keys(0)


# -- split, prompts, selection -----------------------------------------------------------------------------

def test_split_by_episode_is_seeded_and_stored(sim_ds, tok, tmp_path):
    ids = [f"episode_{i}" for i in range(20)]
    a = split_episodes(ids, 0.2, seed=1)
    assert len(a.val) == 4 and not set(a.val) & set(a.train) and set(a.val) | set(a.train) == set(ids)
    assert split_episodes(ids, 0.2, seed=1) == a and split_episodes(ids, 0.2, seed=2).val != a.val
    assert split_episodes(ids, 0.2, seed=9, val_ids=["episode_3"]).val == ("episode_3",)
    assert split_episodes(["episode_0", "episode_1"], 0.1, seed=0).val != ()  # at least one held out

    data = build(sim_ds, tok, batch_size=4, val_fraction=0.34, split_seed=3)
    assert len(data.split.val) == 1 and len(data.split.train) == 2 and data.train_samples == 200
    val_eps = {data.episodes[int(i)] for b in data.val_batches() for i in b["episode_index"]}
    train_eps = {data.episodes[int(i)] for b in take(data.iterator(0), 20) for i in b["episode_index"]}
    assert val_eps == set(data.split.val) and train_eps == set(data.split.train)
    assert data.val_samples == 100 and sum(len(b["actions"]) for b in data.val_batches()) == 100
    data.save(tmp_path)
    rec = load_dataset_record(tmp_path)
    assert rec["split"]["val"] == list(data.split.val) and rec["fingerprint"] == data.fingerprint
    assert DataConfig.from_json(rec["data_config"]) == data.config
    rig = json.loads((tmp_path / "rig.json").read_text())
    assert rig["gripper_set"] == "aloha1" and rig["control_hz"] == 50 and rig["backend"] == "sim"
    assert rig["cameras"] == ["cam_high", "cam_left_wrist", "cam_right_wrist"] and len(rig["joint_names"]) == 14
    pt = PolicyTransforms.from_folder(tmp_path)
    np.testing.assert_array_equal(pt.norm_stats["actions"].mean, data.norm_stats["actions"].mean)
    assert pt.config == data.transform_config


def _prompts_by_frame(data, tok, steps=30):
    decode = {}
    out = {}
    for b in take(data.iterator(0), steps):
        for i in range(len(b["frame_index"])):
            toks = b["observation"].tokens[i][b["observation"].token_mask[i]].tolist()
            key = (data.episodes[int(b["episode_index"][i])], int(b["frame_index"][i]))
            out[key] = decode.setdefault(tuple(toks), tok.sp.decode(toks[1:-1]))
    return out


def test_prompt_task_segment_and_mix(sim_ds, tok):
    subtasks = {}
    for name in ("episode_0", "episode_1", "episode_2"):
        with EpisodeReader(sim_ds / f"{name}.hdf5") as r:
            subtasks[name] = subtask_per_step(r.info.segments, r.info.steps)
    assert any(s for v in subtasks.values() for s in v)
    task = _prompts_by_frame(build(sim_ds, tok, augment=False), tok)
    assert set(task.values()) == {TASK}
    seg = _prompts_by_frame(build(sim_ds, tok, augment=False, prompt="segment"), tok)
    for (ep, t), p in seg.items():
        assert p == (subtasks[ep][t] or TASK)  # uncovered frames fall back to the task
    assert len(set(seg.values())) >= 2
    mixed = _prompts_by_frame(build(sim_ds, tok, augment=False, prompt="mix", prompt_mix_p=0.5), tok)
    covered = [(k, p) for k, p in mixed.items() if subtasks[k[0]][k[1]]]
    n_seg = sum(p == subtasks[ep][t] for (ep, t), p in covered)
    assert 0.3 < n_seg / len(covered) < 0.7 and all(p in (TASK, subtasks[ep][t]) for (ep, t), p in covered)
    assert _prompts_by_frame(build(sim_ds, tok, augment=False, prompt="mix", prompt_mix_p=0.5), tok) == mixed


def _synthetic_store(root, n=3, cams=None, steps=60, phases=True, task="transfer the cube"):
    from recorder.quality import QualityThresholds
    from tests.recorder.helpers import CAMS, tick

    store = DatasetStore(root)
    for _ in range(n):
        w = store.new_episode(cams or CAMS, task=task, control_hz=50,
                              thresholds=QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0))
        for i in range(steps):
            w.append(tick(i, cams=cams or CAMS, phase=("approach" if i < steps // 2 else "grasp") if phases else None))
        w.stop()
    return store


def test_selection_is_exports_and_trash_is_excluded(tmp_path, tok):
    store = _synthetic_store(tmp_path / "ds", n=4)
    store.label("episode_0", "success")
    store.label("episode_2", "success")
    store.remove("episode_2")
    data = build(tmp_path / "ds", tok, outcomes=("success",))
    assert data.episodes == ("episode_0",)
    assert build(tmp_path / "ds", tok).episodes == ("episode_0", "episode_1", "episode_3")
    assert build(tmp_path / "ds", tok, episodes=("1", "episode_3")).episodes == ("episode_1", "episode_3")
    with pytest.raises(EpisodeDataError, match=r"none of the 3 episodes has outcome failure: by outcome .*unlabeled"):
        build(tmp_path / "ds", tok, outcomes=("failure",))
    with pytest.raises(EpisodeDataError, match="none of the selected episodes has segments"):
        build(_synthetic_store(tmp_path / "nophase", n=1, phases=False).root, tok, prompt="segment")


def test_fingerprint_follows_content_and_selection(sim_ds, tok, tmp_path):
    a = build(sim_ds, tok)
    copy = tmp_path / "copied"
    shutil.copytree(sim_ds, copy)
    assert build(copy, tok).fingerprint == a.fingerprint  # rsync'd to a GPU host: same data, same fingerprint
    assert build(copy, tok, episodes=("0", "1")).fingerprint != a.fingerprint
    DatasetStore(copy).set_notes("episode_0", "a note changes nothing the model sees")
    assert build(copy, tok).fingerprint == a.fingerprint


# -- LeRobot v3.0 input -----------------------------------------------------------------------------------------

def test_lerobot_folder_exported_from_our_episodes(sim_ds, tok, tmp_path, monkeypatch):
    from recorder.export_lerobot import export_lerobot

    paths = [sim_ds / f"episode_{i}.hdf5" for i in range(3)]
    out = tmp_path / "lerobot"
    export_lerobot(paths, out)
    ours = build(sim_ds, tok, augment=False)
    lr = build(out, tok, augment=False, num_workers=1)
    assert lr.source_kind == "lerobot" and lr.train_samples == 300 and len(lr.episodes) == 3
    np.testing.assert_allclose(lr.norm_stats["actions"].mean, ours.norm_stats["actions"].mean, atol=1e-5)
    b_ours, b_lr = next(ours.iterator(0)), next(lr.iterator(0))
    assert torch.equal(b_ours["frame_index"], b_lr["frame_index"])
    torch.testing.assert_close(b_lr["actions"], b_ours["actions"], atol=1e-4, rtol=0)
    for k in MODEL.camera_names:  # H.264 of the JPEG frames: close, not equal
        diff = (b_lr["observation"].images[k] - b_ours["observation"].images[k]).abs().mean()
        assert diff < 0.05, (k, float(diff))
    seg = build(out, tok, augment=False, prompt="segment")  # the export's subtask_index carries the segments
    assert len(set(_prompts_by_frame(seg, tok, steps=20).values())) >= 2

    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, repo_type=None, revision=None, **kw):
        seen.update(repo_id=repo_id, repo_type=repo_type)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    hub = build("my-lab/cube", tok, augment=False)
    assert seen == {"repo_id": "my-lab/cube", "repo_type": "dataset"} and hub.fingerprint == lr.fingerprint


def test_lerobot_v21_is_refused_with_the_fix(tmp_path, tok):
    (tmp_path / "old" / "meta").mkdir(parents=True)
    (tmp_path / "old" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(EpisodeDataError, match="only v3.0 is read. Convert"):
        build(tmp_path / "old", tok)


# -- errors a user meets -------------------------------------------------------------------------------------

def test_damaged_episodes_are_left_out_with_the_reason(tmp_path, tok):
    from tests.recorder.helpers import damaged_dataset

    damaged_dataset(tmp_path / "ds")
    with pytest.warns(UserWarning, match="4 damaged episodes left out"):
        data = build(tmp_path / "ds", tok)
    assert data.episodes == ("episode_0", "episode_1")
    assert any("episode_5" in s and "cam_left_wrist" in s for s in data.skipped)
    assert len(data.record()["skipped"]) == 4  # and the run's dataset.json says which and why


def test_no_usable_episodes(tmp_path, tok):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EpisodeDataError, match="no episodes; record some first"):
        build(tmp_path / "empty", tok)
    with pytest.raises(EpisodeDataError, match="does not exist"):
        build(tmp_path / "missing", tok)


def test_mismatched_cameras_and_joints(tmp_path, tok):
    store = _synthetic_store(tmp_path / "cams", n=1)
    _synthetic_store(tmp_path / "cams", n=1, cams=["cam_high"])
    with pytest.raises(EpisodeDataError, match=r"episode_1 has cameras \['cam_high'\].*one camera set"):
        build(store.root, tok)
    store = _synthetic_store(tmp_path / "joints", n=2)
    with h5py.File(store.path("episode_1"), "a") as f:
        for k in ("observations/qpos", "action"):
            a = f[k][()]
            del f[k]
            f[k] = a[:, :12]
    with pytest.raises(EpisodeDataError, match="episode_1 has 12 joints per step, episode_0 14"):
        build(store.root, tok)


def test_non_finite_values_and_undecodable_frames(tmp_path, tok):
    store = _synthetic_store(tmp_path / "nan", n=2)
    with h5py.File(store.path("episode_1"), "a") as f:
        f["observations/qpos"][7, 3] = np.nan
    with pytest.raises(EpisodeDataError, match="episode_1 has non-finite joint values at step 7"):
        build(store.root, tok)
    store = _synthetic_store(tmp_path / "jpeg", n=1, steps=8)
    with h5py.File(store.path("episode_0"), "a") as f:
        row = f["observations/images/cam_high"]
        row[:, :40] = 7  # every frame's JPEG header is garbage
    data = build(store.root, tok, batch_size=2, num_workers=1)
    with pytest.raises(ValueError, match=r"episode_0.hdf5: cam_high step \d+ is not a decodable JPEG"):
        next(data.iterator(0))


def test_episodes_without_a_prompt_need_a_default(tmp_path, tok):
    store = _synthetic_store(tmp_path / "noprompt", n=1, task="")
    with pytest.raises(EpisodeDataError, match="without a task prompt: episode_0; give DataConfig.default_prompt"):
        build(store.root, tok)
    assert build(store.root, tok, default_prompt="fold the towel").episodes == ("episode_0",)


def test_near_constant_joint_refused_when_asked(tmp_path, tok):
    store = _synthetic_store(tmp_path / "const", n=2)
    for name in ("episode_0", "episode_1"):
        with h5py.File(store.path(name), "a") as f:
            for k in ("observations/qpos", "action"):
                f[k][:, 3] = 0.5
    with pytest.raises(EpisodeDataError, match="left_forearm_roll"):
        build(store.root, tok, low_std="error")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        data = build(store.root, tok)  # default: fixed, and said so
    assert "state/left_forearm_roll" in data.near_constant_fixed and any("left_forearm_roll" in str(x.message) for x in w)


def test_absolute_actions_train_joint_targets_not_deltas(sim_ds, tok):
    """delta_actions=False (`workbench train --absolute-actions`, openpi's pi0_aloha_sim): the arm joints' action
    statistics are those of the joint targets, which sit where the arm is, not those of deltas around zero."""
    delta, absolute = build(sim_ds, tok), build(sim_ds, tok, delta_actions=False)
    assert delta.transform_config.delta_actions and not absolute.transform_config.delta_actions
    state = absolute.norm_stats["state"].mean[:14]
    a_abs, a_delta = absolute.norm_stats["actions"].mean[:14], delta.norm_stats["actions"].mean[:14]
    arm = [1, 2, 8, 9]  # shoulders and elbows: far from zero at rest
    np.testing.assert_allclose(a_abs[arm], state[arm], atol=0.2)  # targets lead the state a little
    assert (np.abs(a_delta[arm] - state[arm]) > 0.4).all()  # deltas: near zero, far from the pose
