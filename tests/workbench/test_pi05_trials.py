"""A tiny trained pi0.5 in trials on the simulator through the real serving path (`workbench serve` child,
websocket client, transforms, chunk scheduling, MuJoCo rig) in sync, async and rtc modes. Two training steps make
it as good as random, so the chunk check's tolerances are opened (`ROUGH`, as for the tiny pi0); the safety
layer's caps stay in force."""
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from recorder.store import DatasetStore
from workbench import events as ev
from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.policy_launcher import open_policy
from workbench.deploy.policy_source import ExecConfig

from trial_helpers import run_trials

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))

SEED = 5
ROUGH = ChunkLimits(first_action_steps=1e9, velocity_tolerance=1e9, limit_tolerance=1e9, trained_range=False)


@pytest.fixture(scope="module")
def pi05_policy() -> Path:
    from finetune import train as T
    from finetune.precision import OptimConfig
    from train_helpers import sim_dataset

    out = Path(tempfile.mkdtemp(prefix="pi05_policy_")) / "run"
    cfg = T.TrainConfig(dataset=str(sim_dataset()), out=str(out), base="random", model="pi05_tiny",
                        precision="fp32", gradient_checkpointing=False, steps=2, batch_size=2, num_workers=0,
                        val_every=0, save_every=2, log_every=1, optim=OptimConfig(warmup_steps=0, decay_steps=2))
    return T.train(cfg)


@pytest.fixture(scope="module")
def session(sim_session):
    return sim_session


@pytest.fixture(scope="module")
def server(session, pi05_policy):
    policy = open_policy(pi05_policy, rig=session.rig.config, device="cpu")
    yield policy
    policy.close()


@pytest.mark.parametrize("mode", ["sync", "async", "rtc"])
def test_tiny_trained_pi05_runs_trials_in_every_mode(session, server, tmp_path, mode):
    assert server.metadata["model"] == "pi05_tiny"
    execution = ExecConfig(mode=mode, delay_ticks=3, chunk_limits=ROUGH)
    runner, seen = run_trials(session, DatasetStore(tmp_path), server, prompt="transfer the cube", time_limit_s=1.2,
                              seeds=(SEED,), execution=execution, takeover=False)
    (result,) = runner.results
    assert result.info.ended_by == "time_limit" and result.info.mode == mode
    arrived = [e for e in seen if isinstance(e, ev.ChunkArrived)]
    assert len(arrived) >= 2 and all(e.actions.shape == (50, 14) and np.isfinite(e.actions).all() for e in arrived)
    if mode == "rtc":  # the new chunk continues the committed prefix (guided inpainting)
        d = 3 + ExecConfig().rtc_margin
        gaps = [float(np.abs(new.actions[:d] - old.actions[new.step - old.step:][:d]).max())
                for old, new in zip(arrived, arrived[1:])]
        assert max(gaps) < 0.05, gaps
