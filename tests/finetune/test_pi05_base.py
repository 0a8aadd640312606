"""A base of the other kind is refused by the trainer before the model is built (finetune.train.resolve_base): a
pi0 checkpoint for a pi0.5 preset and the reverse, by the base's config.json and by its weights' keys, and a hub
base by its config.json before its weights are downloaded (the fake hub, a real HTTP server). `workbench base
download` knows the pi0.5 base and says which preset trains it."""
from __future__ import annotations

import json

import pytest

from finetune import train as T
from finetune.checkpoint import save_pi0
from finetune.model_config import Pi0Config
from hub_helpers import FakeHub, hub_env, tiny_base_files, workbench
from pi05_helpers import PI05_TINY, tiny_pi05, write_pi05_hub_style
from pi0_helpers import tiny_model


def _cfg(tmp_path, base, model: str) -> T.TrainConfig:
    return T.TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), base=str(base), model=model, steps=1,
                         batch_size=1)


def test_a_pi0_base_is_refused_for_a_pi05_config_and_the_reverse(tmp_path):
    save_pi0(tiny_model(), tmp_path / "pi0")
    with pytest.raises(T.TrainError) as e:
        T.resolve_base(_cfg(tmp_path, tmp_path / "pi0", "pi05_tiny"), lambda ev: None)
    msg = str(e.value)
    assert e.value.error == "base_kind_mismatch"
    assert f"base checkpoint {tmp_path / 'pi0'} is a pi0 checkpoint (its config.json describes a pi0 model)" in msg
    assert "but a pi0.5 model was asked for" in msg
    assert "this is a pi0 checkpoint: train it with a pi0 preset (--config pi0-lora / pi0 / small / tiny)" in msg
    assert "such as lerobot/pi05_base (--base lerobot/pi05_base)" in msg

    save_pi0(tiny_pi05(), tmp_path / "pi05")
    with pytest.raises(T.TrainError) as e:
        T.resolve_base(_cfg(tmp_path, tmp_path / "pi05", "pi0_tiny"), lambda ev: None)
    msg = str(e.value)
    assert "is a pi0.5 checkpoint" in msg and "but a pi0 model was asked for" in msg
    assert "--config pi05-lora / pi05 / pi05-small / pi05-tiny" in msg and "lerobot/pi0_base" in msg
    # the matching kind passes, its own config (the base's) returned
    folder, mc = T.resolve_base(_cfg(tmp_path, tmp_path / "pi05", "pi05_tiny"), lambda ev: None)
    assert folder == tmp_path / "pi05" and mc.pi05 and mc.name == "pi05_tiny"


def test_a_base_whose_config_reads_as_pi0_is_refused_by_its_weights(tmp_path):
    """openpi's JAX->PyTorch conversion of pi0.5 writes a config.json without "type" (read as pi0): the weights'
    keys (headers only) say pi0.5, so a pi0 preset refuses it before anything is built."""
    folder = tmp_path / "converted"
    write_pi05_hub_style(folder, PI05_TINY)
    (folder / "config.json").write_text(json.dumps(Pi0Config.variant("pi0_tiny").to_dict()))
    with pytest.raises(T.TrainError) as e:
        T.resolve_base(_cfg(tmp_path, folder, "pi0_tiny"), lambda ev: None)
    assert e.value.error == "base_kind_mismatch"
    assert "is a pi0.5 checkpoint (its weights have time_mlp_in.weight" in str(e.value)


def test_a_hub_base_of_the_other_kind_is_refused_before_its_weights_are_downloaded(tmp_path):
    hub = FakeHub()
    try:
        hub.add_model("lab/pi0-tiny", tiny_base_files(tmp_path / "tiny_base"))
        r = workbench("train", "--config", "pi05-tiny", "--base", "lab/pi0-tiny", "--dataset", "synthetic",
                      "--steps", "1", "--batch", "1", "--workers", "0", "--out", str(tmp_path / "run"),
                      env=hub_env(hub, tmp_path / "hf"))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "lab/pi0-tiny is a pi0 checkpoint" in r.stderr and "a pi0.5 model was asked for" in r.stderr
        assert hub.downloaded("lab/pi0-tiny") == ["config.json"]  # not model.safetensors
    finally:
        hub.close()


def test_base_download_names_the_pi05_base_and_the_preset_that_trains_it(tmp_path):
    """`workbench base download` of a pi0.5 base: its summary's train command has the pi0.5 preset, which
    training then accepts (a pi0 preset would be refused)."""
    hub = FakeHub()
    try:
        save_pi0(tiny_pi05(), tmp_path / "pi05_base")
        files = {p.relative_to(tmp_path / "pi05_base").as_posix(): p.read_bytes()
                 for p in (tmp_path / "pi05_base").rglob("*") if p.is_file()}
        hub.add_model("lab/pi05-tiny", files)
        r = workbench("base", "download", "lab/pi05-tiny", env=hub_env(hub, tmp_path / "hf"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "workbench train --dataset DATA --out runs/NAME --config pi05-tiny --base lab/pi05-tiny" in r.stdout
        help_ = workbench("base", "download", "--help", env=hub_env(hub, tmp_path / "hf"))
        assert "lerobot/pi05_base" in help_.stdout
    finally:
        hub.close()
