"""`workbench train`'s argument handling: --config selects a preset (finetune.presets), options override single
values of it, intervals keep their meaning (0 = no validation)."""
from __future__ import annotations

import pytest

from workbench.cli import build_parser
from workbench.cli_train import config_from_args


def _config(tmp_path, *argv):
    if "--config" not in argv:
        argv = ("--config", "tiny", *argv)
    return config_from_args(build_parser().parse_args(["train", "--dataset", "ds", "--out", str(tmp_path / "run"),
                                                       *argv]))


def test_val_every_zero_turns_validation_off(tmp_path):
    assert _config(tmp_path, "--val-every", "0").val_every == 0
    assert _config(tmp_path).val_every == 50  # tiny's default when not given
    assert _config(tmp_path, "--save-every", "700").save_every == 700


def test_save_every_below_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _config(tmp_path, "--save-every", "0")
    assert "--save-every: must be 1 or more" in capsys.readouterr().err


def test_every_preset_is_a_config_and_its_values_are_the_defaults(tmp_path):
    from finetune import presets

    for p in presets.PRESETS:
        c = _config(tmp_path, "--config", p.name)
        assert (c.model, c.base, c.lora, c.steps, c.batch_size, c.optim.peak_lr, c.optim.end_lr, c.optim.ema_decay,
                c.val_every, c.save_every, c.precision, c.gradient_checkpointing, c.device) == (
            p.model, p.base, p.lora, p.steps, p.batch_size, p.lr, p.lr / 10, None, p.val_every, p.save_every,
            p.precision, p.gradient_checkpointing, p.device), p.name
        assert c.optim.warmup_steps == min(1000, p.steps // 10) and c.optim.decay_steps == p.steps
        assert bool(c.data.get("cache_images")) == p.cache_images


def test_options_override_single_values_of_the_preset(tmp_path):
    c = _config(tmp_path, "--config", "small", "--steps", "500", "--lr", "1e-3", "--no-cache-images", "--base", "x")
    assert (c.model, c.steps, c.batch_size, c.optim.peak_lr, c.base) == ("pi0_small", 500, 16, 1e-3, "x")
    assert c.optim.warmup_steps == 50 and "cache_images" not in c.data  # warm-up follows the overridden steps
    assert _config(tmp_path, "--config", "pi0", "--lora") == _config(tmp_path, "--config", "pi0-lora")
    assert not _config(tmp_path, "--config", "pi0-lora", "--no-lora").lora
    c = _config(tmp_path, "--config", "pi0", "--precision", "bf16-sr", "--no-grad-ckpt", "--device", "cuda:1")
    assert (c.precision, c.gradient_checkpointing, c.device) == ("bf16-sr", False, "cuda:1")


def test_absolute_actions_turn_the_delta_joints_off(tmp_path):
    """--absolute-actions reaches the data config; the default (delta joints) stays out of train_config.json, so
    earlier runs resume unchanged. What it does to the training data: tests/finetune/test_training_data.py."""
    from finetune.data import DataConfig

    c = _config(tmp_path, "--config", "pi05-tiny", "--absolute-actions")
    assert not DataConfig(source="ds", **c.data).delta_actions
    assert "delta_actions" not in _config(tmp_path, "--config", "pi05-tiny").data
