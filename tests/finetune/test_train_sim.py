"""Training on episodes recorded on the simulated rig: the loss falls, validation reports per-joint errors,
the policy folder carries everything the trials need, and data errors name their fix."""

from __future__ import annotations

import json

import pytest
import torch

from finetune import events as ev
from finetune import train as T
from finetune.policy_folder import load_policy
from finetune.precision import OptimConfig
from train_helpers import TINY_ARGS, events, run_cli, sim_dataset


def test_loss_falls_and_the_policy_folder_is_complete(tmp_path):
    out = tmp_path / "run"
    res = run_cli(*TINY_ARGS, "--dataset", str(sim_dataset()), "--out", str(out), "--steps", "100", "--batch", "8",
                  "--log-every", "10", "--val-every", "100", "--save-every", "100", "--warmup", "10",
                  "--val-fraction", "0.34")
    assert res.returncode == 0, res.stderr
    losses = [e.loss for e in events(out) if isinstance(e, ev.Step)]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:2]) / 2, losses
    val = [e for e in events(out) if isinstance(e, ev.Validation)]
    assert val and len(val[-1].action_mae_per_joint) == 14 and val[-1].joint_names[0].startswith("left")
    assert all(0 <= x < 3 for x in val[-1].action_mae_per_joint)

    folder = out / "policy"
    for name in ("model.safetensors", "config.json", "norm_stats.json", "transforms.json", "rig.json",
                 "dataset.json", "tokenizer.model", "train_config.json", "metrics.json", "policy.json"):
        assert (folder / name).is_file(), name
    stats = json.loads((folder / "norm_stats.json").read_text())["norm_stats"]
    assert set(stats) >= {"state", "actions"} and {"mean", "std"} <= set(stats["actions"])
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["fingerprint"] and len(dataset["episodes"]) == 3 and dataset["split"]
    rig = json.loads((folder / "rig.json").read_text())
    assert rig["control_hz"] == 50 and len(rig["joint_names"]) == 14

    # serving: the folder alone gives rig actions, bit-identical on a reload
    policy = load_policy(folder)
    assert policy.transforms is not None and policy.tokenizer is not None
    import numpy as np

    state = np.zeros(14, dtype=np.float32)
    frames = {c: np.zeros((48, 64, 3), dtype=np.uint8) for c in rig["cameras"]}
    obs = policy.transforms.observation(state, frames, "transfer the cube")
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(0))
    a1 = policy.model.sample_actions(obs, noise=noise, num_steps=3)
    a2 = load_policy(folder).model.sample_actions(obs, noise=noise, num_steps=3)
    assert torch.equal(a1, a2)
    assert policy.transforms.actions(a1[0], state).shape == (50, 14)


def test_no_usable_episodes_names_the_fix(tmp_path):
    cfg = T.TrainConfig(dataset=str(sim_dataset()), out=str(tmp_path / "run"), base="random", model="pi0_tiny",
                        precision="fp32", gradient_checkpointing=False, steps=2, batch_size=2, num_workers=0,
                        data={"outcomes": ["success"]}, optim=OptimConfig(warmup_steps=0, decay_steps=2))
    with pytest.raises(T.TrainError) as info:
        T.train(cfg)
    assert info.value.error == "no_episodes" and "label" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(T.TrainError) as info:
        T.train(T.TrainConfig(**{**cfg.__dict__, "dataset": str(empty), "out": str(tmp_path / "run2"), "data": {}}))
    assert info.value.error == "no_episodes" and "workbench record" in str(info.value)
