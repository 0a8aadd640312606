"""`workbench teleop`: headless leader-follower teleoperation with timing and tracking statistics."""
from __future__ import annotations

import time


def register(sub) -> None:
    p = sub.add_parser("teleop", help="run leader-follower teleoperation headless",
                       description="Run the ALOHA start-up, then teleoperate until --steps ticks or Ctrl-C. "
                                   "On a simulated rig the scripted demonstrator plays the leaders.")
    p.add_argument("--rig", default="sim-transfer-cube", help="preset name or rig TOML file (default: sim-transfer-cube)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many control ticks (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="simulation: object randomization seed")
    p.add_argument("--no-squeeze", action="store_true", help="skip waiting for the leader-gripper squeeze")
    p.add_argument("--torque-off-here", action="store_true",
                   help="at the end, torque off where the followers stand (default: park them at the sleep pose first)")
    p.set_defaults(func=_teleop)


def _teleop(args) -> int:
    import numpy as np

    from drivers.arm import ARM_JOINT_COLUMNS
    from workbench.cli_session import run_session

    errors: list[float] = []
    joints = list(ARM_JOINT_COLUMNS)

    def track(tick) -> None:
        errors.append(float(np.max(np.abs(tick.qpos - tick.action)[joints])))

    wall0 = time.monotonic()
    outcome: list = []

    def start(session) -> None:
        session.add_tick_listener(track)
        session.subscribe(lambda e: outcome.append((session.rig.success(), session.rig.sim.reward()))
                          if session.rig.sim is not None and type(e).__name__ == "Stopped" else None)
        session.start_teleop(wait_for_squeeze=not args.no_squeeze, seed=args.seed, steps=args.steps)

    session = run_session(args.rig, start, park=not args.torque_off_here)
    wall = time.monotonic() - wall0
    summary = session.result
    if summary is not None:
        print(f"timing: {summary.format()}")
    if errors:
        e = np.asarray(errors)
        tail = e[len(e) // 5:]  # after the first fifth, the follower has caught up with the leader
        print(f"tracking: follower-vs-leader joint error median {np.median(tail):.4f} rad, "
              f"p95 {np.percentile(tail, 95):.4f} rad, max {tail.max():.4f} rad over {len(e)} ticks")
    print(f"safety: {session.rig.safety.clamped_ticks} commands clamped")
    if outcome and summary is not None:
        hz = session.rig.config.control_hz
        print(f"simulated {summary.ticks / hz:.1f} s in {wall:.1f} s of wall time "
              f"({summary.ticks / hz / wall:.2f}x real time; timing above is in simulated time)")
        ok, end_reward = outcome[0]
        # ACT's criterion: the maximum reward was reached at some tick; the reward now may be lower (put down)
        print(f"task success: {'yes' if ok else 'no'} (ACT's criterion: the task's maximum reward reached during "
              f"teleop; reward at the end {end_reward})")
    return 0
