"""`workbench train`'s argument handling: intervals keep their meaning (0 = no validation)."""
from __future__ import annotations

import pytest

from workbench.cli import build_parser
from workbench.cli_train import config_from_args


def _config(tmp_path, *argv):
    return config_from_args(build_parser().parse_args(
        ["train", "--dataset", "ds", "--out", str(tmp_path / "run"), "--config", "tiny", *argv]))


def test_val_every_zero_turns_validation_off(tmp_path):
    assert _config(tmp_path, "--val-every", "0").val_every == 0
    assert _config(tmp_path).val_every == 50  # tiny's default when not given
    assert _config(tmp_path, "--save-every", "700").save_every == 700


def test_save_every_below_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _config(tmp_path, "--save-every", "0")
    assert "--save-every: must be 1 or more" in capsys.readouterr().err
