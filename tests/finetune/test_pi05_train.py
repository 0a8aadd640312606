"""A tiny pi0.5 through the real trainer on episodes recorded on the sim rig: the loss falls, the policy folder
says pi0.5 (config.json, transforms.json: quantile normalization, state in the prompt), and `workbench serve`'s
server hands a chunk to openpi's unmodified client."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from finetune import presets
from finetune.model.pi05 import Pi05

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

STEPS = 40


@pytest.fixture(scope="module")
def run():
    from finetune import train as T
    from finetune.precision import OptimConfig
    from train_helpers import sim_dataset

    out = Path(tempfile.mkdtemp(prefix="pi05_tiny_")) / "run"
    cfg = T.TrainConfig(dataset=str(sim_dataset()), out=str(out), base="random", model="pi05_tiny",
                        precision="fp32", gradient_checkpointing=False, steps=STEPS, batch_size=4, num_workers=0,
                        val_every=0, save_every=STEPS, log_every=1,
                        optim=OptimConfig(peak_lr=3e-3, end_lr=3e-4, warmup_steps=0, decay_steps=STEPS))
    return out, T.train(cfg)


def test_tiny_pi05_trains_and_exports_a_pi05_policy_folder(run):
    from train_helpers import step_losses

    out, policy = run
    losses = step_losses(out)
    assert len(losses) == STEPS
    first = np.mean([losses[s] for s in sorted(losses)[:5]])
    last = np.mean([losses[s] for s in sorted(losses)[-5:]])
    assert last < 0.8 * first, (first, last)  # measured: 0.76 -> 0.54
    cfg = json.loads((policy / "config.json").read_text())
    assert cfg["pi05"] is True and cfg["name"] == "pi05_tiny" and cfg["max_token_len"] == 200
    tc = json.loads((policy / "transforms.json").read_text())
    assert tc["normalization"] == "quantile" and tc["discrete_state_input"] is True


def test_the_served_pi05_answers_openpis_client(run):
    from finetune.runtime import PolicyRuntime
    from serving.server import PolicyServer, ServeConfig
    from wire_helpers import close, openpi_client

    _, policy = run
    runtime = PolicyRuntime.load(policy, device="cpu")
    assert isinstance(runtime.policy.model, Pi05)
    srv = PolicyServer(runtime, ServeConfig(port=0))
    srv.start_in_thread()
    client = openpi_client(srv.port)
    try:
        rng = np.random.default_rng(0)
        state = rng.uniform(-0.3, 0.3, 14).astype(np.float32)
        images = {c: rng.integers(0, 255, (3, 224, 224), dtype=np.uint8)
                  for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")}
        reply = client.infer({"state": state, "images": images, "prompt": "transfer the cube"})
        actions = reply["actions"]
        assert actions.shape == (50, 14) and np.isfinite(actions).all()
        # the state is read through the prompt: another state gives another chunk for the same noise
        hwc = {c: np.ascontiguousarray(v.transpose(1, 2, 0)) for c, v in images.items()}
        a = runtime.infer(state, hwc, "transfer the cube", seed=1)
        b = runtime.infer(state + 0.2, hwc, "transfer the cube", seed=1)
        assert np.isfinite(a).all() and a.shape == (50, 14) and not np.allclose(a, b)
    finally:
        close(client)
        srv.stop()


def test_pi05_presets_name_pi05_models():
    from finetune.model_config import Pi0Config

    for name in ("pi05", "pi05-lora", "pi05-small", "pi05-tiny"):
        p = presets.preset(name)
        assert Pi0Config.variant(p.model).pi05, name
    assert presets.preset("pi05").base == presets.PI05_BASE == "lerobot/pi05_base"
    assert presets.preset("pi05-lora").lora and not presets.preset("pi05").lora


def test_training_samples_carry_the_state_prompt_serving_builds():
    from finetune.data import open_training_data
    from finetune.model_config import Pi0Config
    from finetune.tokenizer import PromptTokenizer, train_small_tokenizer
    from train_helpers import sim_dataset

    mc = Pi0Config.variant("pi05_tiny")
    tok = PromptTokenizer.for_model(train_small_tokenizer(Path(tempfile.mkdtemp())), mc)
    data = open_training_data(str(sim_dataset()), {"default_prompt": "transfer the cube"}, mc, tok, batch_size=2,
                              num_workers=0, seed=0)
    batch = next(iter(data.train_loader))
    pt = data.transforms(tok)
    obs = batch["observation"]
    for i in range(2):
        want = pt.prompt_tokens("transfer the cube", obs.state[i].numpy())
        assert obs.tokens[i].tolist() == want.tokens.tolist()
        assert tok.sp.unk_id() not in want.tokens.tolist()


def test_workbench_train_takes_the_pi05_tiny_preset(tmp_path):
    from train_helpers import run_cli, sim_dataset

    res = run_cli("--config", "pi05-tiny", "--batch", "2", "--workers", "0", "--log-every", "1", "--val-every", "0",
                  "--outcome", "all", "--dataset", str(sim_dataset()), "--steps", "2", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert cfg["name"] == "pi05_tiny" and cfg["pi05"] is True
