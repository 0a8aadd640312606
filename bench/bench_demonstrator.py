"""Scripted demonstrator success rate, sim speed and render cost of the simulated ALOHA rig.

Each episode is run the way the teleop loop runs it: the scripted leaders are read every tick and the followers
are commanded with exactly that reading (optionally through a per-tick step clamp like the safety layer's).

    MUJOCO_GL=osmesa python bench/bench_demonstrator.py --seeds 50
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from drivers.sim import GL_BACKEND, build_sim_rig  # noqa: E402  (picks the GL backend before mujoco loads)
from drivers.sim.sim_camera import CAMERA_MAP  # noqa: E402


def run_demos(task: str, seeds: range, clamp: float) -> dict:
    rig = build_sim_rig(task, seed=seeds.start, camera_names=())
    threshold = rig.demo.gripper.start_threshold_normalized
    ok, rewards, plan_s, loop_s, ticks, max_step = [], [], 0.0, 0.0, 0, 0.0
    for seed in seeds:
        t0 = time.perf_counter()
        rig.reset(seed)
        plan_s += time.perf_counter() - t0
        max_step = max(max_step, rig.demo.trajectory.max_step())
        clock = rig.clock
        deadline = clock.now()
        t0 = time.perf_counter()
        while not all(l.read().position[6] < threshold for l in rig.leaders.values()):
            deadline += 0.02
            clock.sleep_until(deadline)
        last = {s: f.read().position for s, f in rig.followers.items()}
        start_tick = rig.sim.tick
        while not rig.leaders["left"].finished:
            for side in ("left", "right"):
                goal = rig.leaders[side].read().position
                if clamp > 0:
                    goal = last[side] + np.clip(goal - last[side], -clamp, clamp)
                last[side] = goal
                rig.followers[side].command(goal)
            deadline += 0.02
            clock.sleep_until(deadline)
        loop_s += time.perf_counter() - t0
        ticks += rig.sim.tick - start_tick
        ok.append(rig.sim.success)
        rewards.append(rig.sim.max_reward)
    rig.close()
    n = len(ok)
    return {"task": task, "n": n, "success": sum(ok), "rate": sum(ok) / n, "failed_seeds": [s for s, k in zip(seeds, ok) if not k],
            "max_reward_hist": {r: rewards.count(r) for r in sorted(set(rewards))}, "plan_ms": plan_s / n * 1e3,
            "loop_ticks_per_s": ticks / loop_s, "max_step": max_step}


def physics_rate(task: str, ticks: int = 2000) -> float:
    rig = build_sim_rig(task, seed=0, camera_names=())
    t0 = time.perf_counter()
    rig.sim.step(ticks)
    rate = ticks / (time.perf_counter() - t0)
    rig.close()
    return rate


def render_costs(sizes: list[tuple[int, int]], quality: str, frames: int = 10) -> dict:
    out = {}
    for size in sizes:
        rig = build_sim_rig("transfer_cube", seed=0, camera_names=tuple(CAMERA_MAP), image_size=size,
                            render_quality=quality)
        for cam in rig.cameras.values():
            cam.latest()  # renderer creation and first-frame costs are not per-frame costs
        rig.sim.step()
        per = {name: 0.0 for name in rig.cameras}
        for _ in range(frames):
            for name, cam in rig.cameras.items():
                t0 = time.perf_counter()
                cam.latest()
                per[name] += time.perf_counter() - t0
            rig.sim.step()
        out[size] = {name: s / frames * 1e3 for name, s in per.items()}
        rig.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--clamp", type=float, default=0.0, help="per-tick step clamp on follower goals (0 = off)")
    p.add_argument("--tasks", default="transfer_cube,insertion")
    p.add_argument("--no-render", action="store_true")
    args = p.parse_args()
    print(f"GL backend: {GL_BACKEND}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for task in args.tasks.split(","):
        r = run_demos(task, seeds, args.clamp)
        print(f"{task}: success {r['success']}/{r['n']} = {100 * r['rate']:.0f} %  (failed seeds {r['failed_seeds']}; "
              f"max reward histogram {r['max_reward_hist']}); plan {r['plan_ms']:.0f} ms/episode; "
              f"teleop-style loop {r['loop_ticks_per_s']:.0f} ticks/s; largest per-tick leader step {r['max_step']:.3f}"
              + (f"; step clamp {args.clamp}" if args.clamp else ""))
    for task in args.tasks.split(","):
        print(f"{task}: physics only {physics_rate(task):.0f} ticks/s (x 10 substeps of 2 ms)")
    if not args.no_render:
        for quality in ("fast", "full"):
            for size, per in render_costs([(240, 320), (480, 640)], quality).items():
                cams = ", ".join(f"{n}={CAMERA_MAP[n]} {ms:.1f}" for n, ms in per.items())
                print(f"render {quality} {size[0]}x{size[1]} ms/frame: {cams}; all four {sum(per.values()):.1f} ms")


if __name__ == "__main__":
    main()
