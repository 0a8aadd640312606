"""`workbench teleop`: headless leader-follower teleoperation with timing and tracking statistics."""
from __future__ import annotations

import time

import numpy as np

ARM_JOINTS_14 = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]  # the 12 arm joints of [left 7, right 7] (grippers excluded)


def register(sub) -> None:
    p = sub.add_parser("teleop", help="run leader-follower teleoperation headless",
                       description="Run the ALOHA start-up, then teleoperate until --steps ticks or Ctrl-C. "
                                   "On a simulated rig the scripted demonstrator plays the leaders.")
    p.add_argument("--rig", default="sim-transfer-cube", help="preset name or rig TOML file (default: sim-transfer-cube)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many control ticks (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="simulation: object randomization seed")
    p.add_argument("--no-squeeze", action="store_true", help="skip waiting for the leader-gripper squeeze")
    p.add_argument("--sleep-pose", action="store_true", help="move the followers to the sleep pose at the end")
    p.set_defaults(func=_teleop)


def _teleop(args) -> int:
    from workbench.config import load_rig_config
    from workbench.rig import build_rig
    from workbench.teleop import TeleopLoop

    cfg = load_rig_config(args.rig)
    rig = build_rig(cfg)
    errors: list[float] = []

    def track(tick) -> None:
        errors.append(float(np.max(np.abs(tick.qpos - tick.action)[ARM_JOINTS_14])))

    with rig:
        rig.begin_episode(args.seed if args.seed is not None else cfg.sim.seed)
        loop = TeleopLoop(rig)
        loop.add_listener(track)
        loop.startup(progress=lambda m: print(f"[startup] {m}", flush=True), wait_for_squeeze=not args.no_squeeze)
        wall0 = time.monotonic()
        try:
            summary = loop.run(steps=args.steps)
        except KeyboardInterrupt:
            summary = loop.timing.summary()
            print("\ninterrupted: followers held")
        wall = time.monotonic() - wall0
        outcome = (rig.success(), rig.sim.reward()) if rig.sim is not None else None
        loop.shutdown(progress=lambda m: print(f"[shutdown] {m}", flush=True), sleep_pose=args.sleep_pose)
        print(f"timing: {summary.format()}")
        if errors:
            e = np.asarray(errors)
            tail = e[len(e) // 5:]  # after the first fifth, the follower has caught up with the leader
            print(f"tracking: follower-vs-leader joint error median {np.median(tail):.4f} rad, "
                  f"p95 {np.percentile(tail, 95):.4f} rad, max {tail.max():.4f} rad over {len(e)} ticks")
        print(f"safety: {rig.safety.clamped_ticks} commands clamped")
        if outcome is not None:
            print(f"simulated {summary.ticks / cfg.control_hz:.1f} s in {wall:.1f} s of wall time "
                  f"({summary.ticks / cfg.control_hz / wall:.2f}x real time; timing above is in simulated time)")
            print(f"task success: {outcome[0]} (reward {outcome[1]} at the end of teleop)")
    return 0
