"""`workbench` command line. With no subcommand it opens the desktop app.

Each command module exposes `register(subparsers)`; the GUI calls the same services these commands do.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMAND_MODULES = [
    "workbench.cli_rig",
    "workbench.cli_teleop",
    "workbench.cli_record", "workbench.cli_episodes",
    "workbench.cli_train", "workbench.cli_base", "workbench.cli_cluster",
    "workbench.cli_serve",
    "workbench.cli_trials", "workbench.cli_trial_stats", "workbench.cli_closed_loop",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="ALOHA robot-learning workbench: collect episodes, fine-tune pi0, deploy. "
                    "Run without a command to open the desktop app.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gui = sub.add_parser("gui", help="open the desktop app (the default)",
                         description="Open the desktop app on the remembered rig (the simulated rig when none is configured).")
    gui.add_argument("--rig", help="preset name or rig TOML file (default: last used, else sim-transfer-cube)")
    gui.set_defaults(func=_run_gui)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def _run_gui(args: argparse.Namespace) -> int:
    from ui.app import main as gui_main

    return gui_main(rig=getattr(args, "rig", None))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Failures an operator can act on: printed as one readable line (with -v, the traceback)."""
    from drivers.errors import DriverError
    from recorder.finalize import RecorderError
    from workbench.config import ConfigError
    from workbench.control import LoopStopped
    from workbench.session import SessionBusy

    errors: list[type[BaseException]] = [DriverError, ConfigError, RecorderError, LoopStopped, SessionBusy,
                                         FileNotFoundError, PermissionError]
    try:
        from recorder.store import StoreError
        from serving.client import PolicyConnectionError
        from workbench.deploy.trials_service import TrialsCancelled, TrialsError
        from workbench.replay import ReplayError

        errors += [StoreError, ReplayError, PolicyConnectionError, TrialsError, TrialsCancelled]
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command is None:
        args.func, args.rig = _run_gui, None
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `workbench episodes DIR show | head`: the reader left; no traceback (Python's advice)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # readable errors, not tracebacks, for the expected failure kinds
        if isinstance(exc, _user_errors()) and not args.verbose:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
