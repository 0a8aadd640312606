"""The wire protocol (serving.protocol): the optional extensions validated and passed only when sent; a client's
observation map (observation_message) is what the server's parsers read back."""
from __future__ import annotations

import numpy as np
import pytest

from serving.protocol import (AUTH_HEADER, ProtocolError, auth_headers, observation_message, packb, parse_extensions,
                              parse_observation, unpackb)


def test_parse_extensions_validates_and_passes_only_present_fields():
    shape = (50, 14)
    assert parse_extensions({"state": 1}, shape) == {}
    out = parse_extensions({"step": 3, "action_prefix": np.zeros((4, 14), np.float32), "inference_delay": 2}, shape)
    assert out["step"] == 3 and out["prefix"].shape == (4, 14) and out["prefix"].dtype == np.float64
    assert out["delay"] == 2
    assert parse_extensions({b"step": 0}, shape) == {"step": 0}
    assert parse_extensions({"action_prefix": [[0.0] * 14]}, shape)["prefix"].shape == (1, 14)
    bad = [({"step": -1}, "step"), ({"step": "3"}, "step"), ({"step": True}, "step"), ({"step": 1.5}, "step"),
           ({"action_prefix": np.zeros((4, 7))}, "action_prefix"), ({"action_prefix": np.zeros(14)}, "action_prefix"),
           ({"action_prefix": np.zeros((51, 14))}, "horizon"), ({"action_prefix": np.zeros((0, 14))}, "action_prefix"),
           ({"action_prefix": np.full((2, 14), np.nan)}, "non-finite"), ({"action_prefix": "x"}, "action_prefix"),
           ({"action_prefix": [["a"] * 14]}, "action_prefix"),
           ({"action_prefix": np.zeros((2, 14)), "inference_delay": 3}, "exceeds"),
           ({"inference_delay": 1}, "no action_prefix"), ({"inference_delay": -1}, "inference_delay")]
    for msg, match in bad:
        with pytest.raises(ProtocolError, match=match):
            parse_extensions(msg, shape)


def test_a_client_observation_round_trips_through_the_wire_format():
    images = {"cam_high": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)}
    state = np.linspace(-1, 1, 14)
    plain = unpackb(packb(observation_message(state, images, "pick")))
    assert set(plain) == {"state", "images", "prompt"}  # no extension unless given: what openpi sends
    s, frames, prompt, seed = parse_observation(plain)
    np.testing.assert_array_equal(s, state)
    np.testing.assert_array_equal(frames["cam_high"], images["cam_high"])
    assert prompt == "pick" and seed is None and parse_extensions(plain, (50, 14)) == {}
    prefix = np.ones((3, 14))
    full = unpackb(packb(observation_message(state, images, "pick", seed=7, step=4, prefix=prefix, delay=2)))
    assert parse_observation(full)[3] == 7
    ext = parse_extensions(full, (50, 14))
    assert ext["step"] == 4 and ext["delay"] == 2
    np.testing.assert_array_equal(ext["prefix"], prefix)
    assert auth_headers(None) is None and auth_headers("k") == {AUTH_HEADER: "Api-Key k"}
