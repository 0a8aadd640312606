"""Teleop loop on the virtual rig: 4 buses x 9 emulated servos through the real dynamixel-sdk, 50 Hz.

Prints the per-tick cost of the loop's own work and of the bus round trips, and the period p50/p99.
Targets: own work < 2 ms per tick; p99 period within 1 ms of 20 ms.

    python bench/bench_teleop.py --seconds 30
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.config import load_rig_config  # noqa: E402
from workbench.backends import build_rig  # noqa: E402
from workbench.session import RigSession  # noqa: E402


def run(seconds: float, rig_name: str = "virtual") -> dict:
    """Teleop through the same RigSession and ControlLoop the app and the CLI use."""
    cfg = load_rig_config(rig_name)
    rig = build_rig(cfg)
    rig.connect()
    with RigSession(rig) as session:
        session.start_teleop(squeeze_timeout=30, steps=int(seconds * cfg.control_hz))
        session.wait()
        if session.last_error is not None:
            raise session.last_error
        return {"summary": session.result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rig", default="virtual")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res = run(args.seconds, args.rig)
    s = res["summary"]
    print(f"rig {args.rig}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(s.format())
    print(f"own work per tick: p50 {s.work_p50_ms:.3f} ms, p99 {s.work_p99_ms:.3f} ms (target < 2 ms)")
    print(f"bus round trips per tick (4 sync reads + 2 sync writes): p50 {s.io_p50_ms:.3f} ms, p99 {s.io_p99_ms:.3f} ms")
    print(f"period p50 {s.period_p50_ms:.3f} ms, p99 {s.period_p99_ms:.3f} ms "
          f"(p99 - 20 ms = {s.period_p99_ms - 20:.3f} ms; target <= 1 ms), overruns {s.overruns}")


if __name__ == "__main__":
    main()
