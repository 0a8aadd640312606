"""Policy folder: hub keys, bit-identical reload, the trainer's export, push through the dataset push code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from finetune import train as T
from finetune.checkpoint import TIED_ALIAS, build_model, random_init_
from finetune.model_config import Pi0Config
from finetune.model.pi0 import random_observation
from finetune.policy_folder import PolicyFolderError, is_policy_folder, load_policy, push_policy, write_policy_folder
from finetune.precision import OptimConfig
from finetune.train_state import list_checkpoints
from pi0_helpers import reference_hub_keys


def _tiny(dtype: str):
    model = build_model(Pi0Config.variant("pi0_tiny").replace(dtype=dtype), "meta")
    return random_init_(model, "cpu", std=0.05, seed=3).eval()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reload_gives_bit_identical_actions(tmp_path, dtype):
    model = _tiny(dtype)
    write_policy_folder(tmp_path / "policy", model, train_config={"base": "random", "lora": False}, step=7)
    assert is_policy_folder(tmp_path / "policy") and not (tmp_path / "policy.partial").exists()
    stored = load_file(str(tmp_path / "policy" / "model.safetensors"))
    expected = set(reference_hub_keys(model.config, with_expert_lm_head=False))
    assert set(stored) == expected and TIED_ALIAS not in stored
    loaded = load_policy(tmp_path / "policy")
    assert loaded.manifest["step"] == 7 and loaded.model.config == model.config
    obs = random_observation(model.config, 1, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(1))
    a = model.sample_actions(obs, noise=noise, num_steps=3)
    assert torch.equal(a, loaded.model.sample_actions(obs, noise=noise, num_steps=3))
    assert not torch.equal(a, loaded.model.sample_actions(obs, noise=noise + 1e-3, num_steps=3))


def test_rewrite_replaces_atomically_and_rejects_non_policies(tmp_path):
    write_policy_folder(tmp_path / "p", _tiny("float32"), step=1)
    write_policy_folder(tmp_path / "p", _tiny("float32"), step=2)
    assert json.loads((tmp_path / "p" / "policy.json").read_text())["step"] == 2
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]
    with pytest.raises(PolicyFolderError):
        load_policy(tmp_path)


@pytest.mark.parametrize("lora", [False, True])
def test_trainer_exports_the_trained_weights_with_hub_keys(tmp_path, lora):
    cfg = T.TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), base="random", model="pi0_tiny",
                        precision="fp32", gradient_checkpointing=False, steps=2, batch_size=2, log_every=1,
                        val_every=0, save_every=2, num_workers=0, lora=lora,
                        optim=OptimConfig(peak_lr=1e-2, warmup_steps=0, decay_steps=2))
    folder = T.train(cfg)
    files = {p.name for p in folder.iterdir()}
    assert {"policy.json", "config.json", "model.safetensors", "tokenizer.model", "train_config.json",
            "metrics.json", "dataset.json"} <= files
    weights = load_file(str(folder / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in weights)
    (_, ckpt), = list_checkpoints(tmp_path / "run")
    trained = load_file(str(ckpt / "trainable.safetensors"))
    if not lora:
        assert all(torch.equal(weights[k], v) for k, v in trained.items() if k != TIED_ALIAS)
    else:  # adapters merged: a LoRA-wrapped model with the checkpoint's weights gives the same outputs
        from finetune.lora import apply_lora

        ref = apply_lora(_tiny("float32"))
        base = build_model(Pi0Config.variant("pi0_tiny"), "meta")
        random_init_(base, "cpu", seed=0)  # the trainer's random base (seed 0)
        sd = {k: v for k, v in base.state_dict().items()}
        ref_sd = ref.state_dict()
        for k in ref_sd:
            src = trained.get(k, sd.get(k.replace(".base_layer.", ".")))
            if src is None:  # adapters of the frozen, never-used last VLM half: still zero (lora_B = 0)
                assert "lora_" in k
                continue
            ref_sd[k].copy_(src)
        merged = load_policy(folder).model
        obs = random_observation(merged.config, 1, generator=torch.Generator().manual_seed(0))
        noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(1))
        a, b = ref.sample_actions(obs, noise=noise, num_steps=3), merged.sample_actions(obs, noise=noise, num_steps=3)
        assert (a - b).abs().max() < 1e-4
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained.items())  # adapters did train
    assert json.loads((folder / "train_config.json").read_text())["lora"] is lora
    assert "step" in json.loads((folder / "metrics.json").read_text())


def test_push_uses_the_dataset_push_with_progress(tmp_path, monkeypatch):
    from tests.recorder.fake_hub import FakeHub

    write_policy_folder(tmp_path / "policy", _tiny("float32"), step=1)
    hub = FakeHub()
    base_handler = hub.server.RequestHandlerClass

    class ModelRepos(base_handler):  # the fake answers dataset URLs; model repos differ only in the path
        def do_POST(self):  # noqa: N802
            self.path = self.path.replace("/api/models/", "/api/datasets/")
            return super().do_POST()

    hub.server.RequestHandlerClass = ModelRepos
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        import huggingface_hub.constants as C

        monkeypatch.setattr(C, "ENDPOINT", hub.endpoint)
        seen: list[float] = []
        push_policy(tmp_path / "policy", "lab/pi0-cube", token="hf_fake", progress=lambda t, f: seen.append(f))
        assert {"model.safetensors", "config.json", "policy.json"} <= set(hub.files)
        assert seen[-1] == 1.0 and hub.tags == []

        class Cancel(Exception):
            pass

        def cancel(text: str, fraction: float) -> None:
            if fraction > 0:
                raise Cancel

        n = len(hub.commits)
        with pytest.raises(Cancel):
            push_policy(tmp_path / "policy", "lab/pi0-cube", token="hf_fake", progress=cancel)
        assert len(hub.commits) == n  # a cancel commits nothing
    finally:
        hub.close()
