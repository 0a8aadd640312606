"""One help formatter for the commands that show their defaults."""
from __future__ import annotations

import argparse


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (an option left out: a preset's or the policy's value, said in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


__all__ = ["DefaultsHelp"]
