"""`workbench closed-loop`: demonstrations -> post-training -> seeded trials (-> corrections -> again) on the sim."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "closed-loop", help="the whole loop on the simulator with a measured success rate",
        description="Records --demos scripted demonstrations on the simulated rig, post-trains a policy on them, "
                    "runs --trials seeded trials and prints the success rate with its Wilson 95% interval, how far "
                    "the failed trials got and where the time went. Each stage is skipped when its output is "
                    "already in --out. --rounds 2 adds operator corrections (the scripted demonstrator takes over "
                    "when the policy stalls, on fresh seeds), trains further on them and re-runs the trials.")
    p.add_argument("--task", required=True, choices=("sim-transfer-cube", "sim-insertion"))
    p.add_argument("--demos", type=int, required=True)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (stages already done there are skipped)")
    from finetune import presets

    p.add_argument("--config", default="small", choices=presets.NAMES,
                   help="training preset (finetune/presets.py, as `workbench train --config`): small (1.6 M "
                        "parameters, learns on a CPU), tiny (0.14 M, tests), pi0 / pi0-lora (the 3.5 B model; a GPU); "
                        "their pi0.5 twins pi05-small, pi05-tiny, pi05 / pi05-lora (from lerobot/pi05_base); the "
                        "options below override its values")
    p.add_argument("--base", default=None, help=f"base weights [default: the preset's: {presets.describe('base')}]")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None,
                   help=f"[default: the preset's: {presets.describe('lora')}]")
    p.add_argument("--steps", type=int, default=None, help=f"[default: {presets.describe('steps')}]")
    p.add_argument("--batch", type=int, default=None, help=f"[default: {presets.describe('batch_size')}]")
    p.add_argument("--lr", type=float, default=None, help=f"[default: {presets.describe('lr')}]")
    p.add_argument("--device", default=None, help=f"[default: {presets.describe('device')}]")
    p.add_argument("--demo-seeds", default=None, help="e.g. 0-49 (default 0..demos-1)")
    p.add_argument("--trial-seeds", default=None, help="e.g. 1000-1099 (default 100000..)")
    p.add_argument("--allow-overlap", action="store_true", help="let trial seeds repeat demonstration seeds "
                                                                 "(memorization, not generalization)")
    p.add_argument("--mode", choices=("sync", "async", "rtc"), default="sync")
    p.add_argument("--execute-steps", type=int, default=25)
    p.add_argument("--delay-ticks", type=int, default=None,
                   help="enter each chunk exactly N ticks after its observation (deterministic latency)")
    p.add_argument("--ensemble", action="store_true", help="ACT temporal ensembling (with --mode async or rtc)")
    p.add_argument("--episode-s", type=float, default=8.0)
    p.add_argument("--rounds", type=int, choices=(1, 2), default=1)
    p.add_argument("--corrections", type=int, default=None, help="round 2 rollouts (default: round 1's failures)")
    p.add_argument("--correction-steps", type=int, default=None, help="round 2 training steps (default steps/2)")
    p.add_argument("--stall-s", type=float, default=2.0, help="round 2: the demonstrator takes over after this long "
                                                               "without reward progress")
    p.add_argument("--train-arg", action="append", default=[], help="extra argument for workbench train "
                                                                     "(repeatable), e.g. --train-arg=--no-augment")
    p.set_defaults(func=_closed_loop)


def _closed_loop(args) -> int:
    from workbench.deploy.trials_service import parse_seeds
    from workbench.deploy.closed_loop import ClosedLoop, ClosedLoopConfig

    cfg = ClosedLoopConfig(
        task=args.task, demos=args.demos, trials=args.trials, out=str(args.out), model=args.config, base=args.base,
        lora=args.lora, steps=args.steps, batch=args.batch, lr=args.lr, device=args.device,
        demo_seeds=parse_seeds(args.demo_seeds), trial_seeds=parse_seeds(args.trial_seeds),
        allow_overlap=args.allow_overlap, mode=args.mode, execute_steps=args.execute_steps,
        delay_ticks=args.delay_ticks, ensemble=args.ensemble, episode_s=args.episode_s, rounds=args.rounds, corrections=args.corrections,
        correction_steps=args.correction_steps, stall_s=args.stall_s, train_args=tuple(args.train_arg))
    report = ClosedLoop(cfg, say=lambda s: print(s, flush=True)).run()
    print(report.format(), flush=True)
    print(f"written: {Path(args.out) / 'closed_loop.json'}")
    return 0


__all__ = ["register"]
