"""A policy trained with training-time RTC only learned clean prefixes of up to `rtc_max_delay` actions: the
runtime clamps a longer requested delay to that maximum (warning once) instead of handing the model a delay it
never saw in training."""
from __future__ import annotations

import logging

import numpy as np

from finetune.runtime import PolicyRuntime
from serve_helpers import tiny_policy

RTC_MAX_DELAY = 4  # as tests/finetune/test_rtc.py: the same trained folder


def test_a_trained_rtc_delay_beyond_the_trained_maximum_is_clamped_with_one_warning(monkeypatch, caplog):
    rt = PolicyRuntime.load(tiny_policy(rtc_max_delay=RTC_MAX_DELAY), device="cpu")
    assert rt.rtc_mode == "trained" and rt.rtc_max_delay == RTC_MAX_DELAY
    model = rt.policy.model
    real, delays = model.denoise_conditioned, []

    def spy(cache, state, noise, prefix, delay, num_steps=None):
        delays.append(delay)
        return real(cache, state, noise, prefix, delay, num_steps)

    monkeypatch.setattr(model, "denoise_conditioned", spy)
    rng = np.random.default_rng(0)
    state = rng.normal(0, 0.3, 14).astype(np.float32)
    images = {c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in rt.cameras}
    prefix = np.tile(state, (20, 1)) + 0.01 * np.arange(20)[:, None]
    with caplog.at_level(logging.WARNING, logger="finetune.runtime"):
        clamped = rt.infer(state, images, "transfer the cube", seed=1, prefix=prefix, delay=10)
        rt.infer(state, images, "transfer the cube", seed=1, prefix=prefix, delay=15)
        rt.infer(state, images, "transfer the cube", seed=1, prefix=prefix, delay=3)
        at_max = rt.infer(state, images, "transfer the cube", seed=1, prefix=prefix, delay=RTC_MAX_DELAY)
    assert delays == [RTC_MAX_DELAY, RTC_MAX_DELAY, 3, RTC_MAX_DELAY]
    assert np.array_equal(clamped, at_max)
    warned = [r for r in caplog.records if "trained with" in r.getMessage()]
    assert len(warned) == 1 and "10" in warned[0].getMessage(), [r.getMessage() for r in caplog.records]
