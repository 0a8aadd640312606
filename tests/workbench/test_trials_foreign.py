"""A LeRobot-trained pi0 folder where our policy folders go: what `workbench trials --policy FOLDER` does with it
-- open_policy starts a `workbench serve` child on loopback, checks the rig on what the server announces, the trials
service plans on its metadata -- and a trial on the MuJoCo rig. The policy is a tiny random pi0 in LeRobot's
2025-09 layout reading one camera ("top", mapped to cam_high). A real LeRobot pi0 is full size, which its
config.json says; this tiny one needs the architecture named (`policy_config="tiny"`: `workbench trials
--policy-config`, the child's `--config`), given through the trials service's request. Its chunks are as wild as any untrained model's: the trial runs with the chunk check's
tolerances opened (the safety layer's caps stay in force), as tests/workbench/test_trials_served.py does for our
own tiny policy."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))

from finetune.model.pi0 import Pi0  # noqa: E402
from finetune.model_config import Pi0Config  # noqa: E402
from foreign_helpers import aloha_stats, small_tokenizer, write_lerobot_folder  # noqa: E402
from recorder.store import DatasetStore  # noqa: E402
from trial_helpers import run_trials  # noqa: E402
from workbench import events as ev  # noqa: E402
from workbench.deploy.chunk_check import ChunkLimits  # noqa: E402
from workbench.deploy.policy_source import ExecConfig  # noqa: E402

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)

ROUGH = ChunkLimits(first_action_steps=1e9, velocity_tolerance=1e9, limit_tolerance=1e9, trained_range=False)


@pytest.fixture(scope="module")
def lerobot_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Pi0(Pi0Config.variant("pi0_tiny").replace(camera_names=("top", "empty_camera_0", "empty_camera_1")))
    rng = np.random.default_rng(0)
    folder = write_lerobot_folder(tmp_path_factory.mktemp("lerobot") / "pretrained_model", model.eval(),
                                  state_stats=aloha_stats(rng), action_stats=aloha_stats(rng),
                                  norm_map={"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
                                  cameras=["top"], empty_cameras=2, adapt_to_pi_aloha=True)
    # the tiny model's small tokenizer next to its weights (a full-size one reads PaliGemma's from the hub)
    shutil.copyfile(small_tokenizer(tmp_path_factory.mktemp("tok")), folder / "tokenizer.model")
    return folder


@pytest.fixture(scope="module")
def session(sim_session):
    return sim_session


def test_a_lerobot_folder_opens_like_ours_and_runs_a_trial_on_the_sim_rig(lerobot_folder, session, tmp_path):
    from workbench.deploy.trials_service import TrialsRequest, TrialsService

    lines: list[str] = []
    service = TrialsService(TrialsRequest(policy=str(lerobot_folder), trials=1, prompt="transfer the cube",
                                          dataset=tmp_path / "trials", device="cpu", policy_config="tiny"),
                            session.rig.config)
    try:
        plan = service.open(log=lines.append)  # what `workbench trials --policy-config tiny` does
        policy = service.policy
        check = policy.rig_check  # the robot side's check, on the announced metadata
        assert check.ok, check.differences
        assert "joint count (14)" in check.checked and any("cam_high" in c for c in check.checked)
        summary = check.summary()
        assert "NOT checked" in summary and "control rate" in summary and "gripper constants" in summary
        assert any("rig check OK" in line and "NOT checked" in line for line in lines)  # said to the operator
        assert plan.policy_type == "lerobot pi0" and policy.metadata["image_cameras"] == ["cam_high"]
        runner, seen = run_trials(session, DatasetStore(tmp_path / "run"), policy, prompt="transfer the cube",
                                  time_limit_s=1.2, seeds=(5,), takeover=False,
                                  execution=ExecConfig(mode="sync", delay_ticks=3, chunk_limits=ROUGH))
        (result,) = runner.results
        assert result.info.ended_by == "time_limit"
        arrived = [e for e in seen if isinstance(e, ev.ChunkArrived)]
        assert len(arrived) >= 2 and all(e.actions.shape == (50, 14) and np.isfinite(e.actions).all()
                                         for e in arrived)
    finally:
        service.close()
