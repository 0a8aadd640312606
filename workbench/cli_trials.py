"""`workbench trials`: policy rollouts on a rig from the terminal, recorded as trial episodes, with a summary."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from workbench.cli_keys import RawKeys


def register(sub) -> None:
    p = sub.add_parser(
        "trials", help="run a policy on the rig: recorded trial rollouts with outcomes and a success rate",
        description="Runs --trials rollouts of --policy on --rig. Each trial is recorded as an episode (marked as a "
                    "trial) in --dataset. The policy is served by a separate process on loopback (a folder or hub "
                    "id), or reached at a ws:// URL (a remote GPU box running `workbench serve`). On the simulator the "
                    "outcome comes from the task's reward. Keys: n end this trial, t take over / hand back (as the "
                    "pedal), c + text + Enter language command, q stop.")
    p.add_argument("--rig", default="sim-transfer-cube", help="preset name or rig TOML file")
    p.add_argument("--policy", required=True, help="policy folder, hub id, or ws://host:port of a policy server")
    p.add_argument("--api-key", default=None, help="token of a remote policy server (or WORKBENCH_API_KEY)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--prompt", default=None, help="task prompt (default: the policy's training task)")
    p.add_argument("--mode", choices=("sync", "async", "rtc"), default="sync",
                   help="chunk execution: sync (execute k, then query), async (query while executing, latency "
                        "compensated), rtc (async + real-time chunking)")
    p.add_argument("--execute-steps", type=int, default=25, help="actions executed per chunk / query interval (25)")
    p.add_argument("--ensemble", action="store_true", help="ACT temporal ensembling (async / rtc)")
    p.add_argument("--delay-ticks", type=int, default=None,
                   help="simulator only: enter each chunk exactly N ticks after its observation (a deterministic "
                        "stand-in for inference latency)")
    p.add_argument("--seeds", default=None, help="simulator: seeds, e.g. 100-119 or 3,5,8 (default: continue the "
                                                 "dataset's)")
    p.add_argument("--time-limit-s", type=float, default=20.0, help="trial time limit in seconds (20)")
    p.add_argument("--dataset", type=Path, default=None, help="dataset folder for the trial episodes "
                                                              "(default: trials/<policy name>)")
    p.add_argument("--no-takeover", action="store_true", help="leaders do not follow the followers")
    p.add_argument("--device", default="auto", help="inference device of the local policy server (auto, cuda, cpu)")
    p.set_defaults(func=_trials)


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """'100-104' -> (100..104); '3,5,8' -> (3, 5, 8); mixed allowed."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: use a range like 100-119 or a list like 3,5,8") from None
    return tuple(out)


class TrialKeys(RawKeys):
    """n end this trial, t take over / hand back (the pedal), c + text + Enter a language command, q stop."""

    def __init__(self, runner):
        super().__init__()
        self.runner = runner

    def key(self, ch: str) -> None:
        if ch == "n":
            self.runner.next()
        elif ch == "t":
            src = self.runner.source
            self.runner.control.toggle(bool(src and src.operator))
        elif ch == "c":
            self.begin_line("command: ")
        elif ch == "q":
            self.runner.stop()

    def line(self, text: str) -> None:
        if text:
            self.runner.command(text)
            print(f"command: {text!r} (from the next chunk on)", flush=True)


def _trials(args) -> int:
    from recorder.store import DatasetStore
    from workbench import events as ev
    from workbench.cli_session import print_event, run_session
    from workbench.config import load_rig_config
    from workbench.deploy.policy_launcher import open_policy
    from workbench.deploy.policy_source import ExecConfig
    from workbench.deploy.trials import TrialRunner, TrialSettings, policy_identity

    seeds = parse_seeds(args.seeds)
    execution = ExecConfig(mode=args.mode, execute_steps=args.execute_steps, ensemble=args.ensemble,
                           delay_ticks=args.delay_ticks)
    rig_config = load_rig_config(args.rig)
    api_key = args.api_key or os.environ.get("WORKBENCH_API_KEY")
    print(f"starting the policy ({args.policy}) ...", flush=True)
    policy = open_policy(args.policy, rig=rig_config, api_key=api_key, device=args.device,
                         log=lambda line: print(f"  [server] {line}", flush=True))
    try:
        meta = dict(policy.metadata)
        prompt = args.prompt or meta.get("task") or meta.get("prompt")
        if not prompt:
            raise ValueError("the policy does not say which task it was trained on: give --prompt")
        pid, step = policy_identity(meta, args.policy)
        dataset = args.dataset or Path("trials") / pid.replace("@", "_")
        store = DatasetStore(dataset)
        settings = TrialSettings(prompt=prompt, trials=args.trials, time_limit_s=args.time_limit_s,
                                 execution=execution, seeds=seeds, takeover=not args.no_takeover,
                                 policy=args.policy, policy_id=pid, checkpoint=step)
        holder: dict = {}
        keys = None

        def on_event(e) -> None:
            if isinstance(e, ev.TrialStarted):
                seed = "" if e.seed is None else f", seed {e.seed}"
                print(f"trial {e.index + 1}/{e.total} ({e.name}{seed}): {e.prompt!r}", flush=True)
            elif isinstance(e, ev.TrialEnded):
                tts = "" if e.time_to_success_s is None else f", success at {e.time_to_success_s:.1f} s"
                print(f"  -> {e.outcome} ({e.ended_by}{tts}, {e.interventions} interventions)", flush=True)
            elif isinstance(e, ev.TakeoverChanged):
                print(f"  {'operator took over' if e.operator else 'policy back in control'} ({e.reason})",
                      flush=True)
            elif isinstance(e, ev.PromptChanged):
                print(f"  prompt: {e.text!r}", flush=True)
            elif not isinstance(e, (ev.ChunkArrived, ev.TrialsFinished)):
                print_event(e)

        def start(session) -> None:
            nonlocal keys
            runner = TrialRunner(session.rig, store, policy, settings)
            holder["runner"] = runner
            session.start_trials(runner)
            if sys.stdin.isatty():
                keys = TrialKeys(runner)
                keys.start()

        print(f"{args.trials} trials of {pid} on {args.rig}, mode {args.mode}; episodes in {dataset}", flush=True)
        try:
            run_session(args.rig, start, on_event=on_event)
        finally:
            if keys is not None:
                keys.stop()
        runner = holder.get("runner")
        if runner is not None:
            _summary(runner, store, sys.stdin.isatty() and session_needs_labels(runner))
    finally:
        policy.close()
    return 0


def session_needs_labels(runner) -> bool:
    return any(r.outcome == "unlabeled" for r in runner.results)


def _summary(runner, store, ask: bool) -> None:
    from workbench.deploy.trial_stats import format_table, load_trials, summarize

    if ask:
        for r in runner.results:
            if r.outcome != "unlabeled":
                continue
            ans = input(f"outcome of trial {r.index + 1} ({r.name}): [s]uccess, [f]ailure, [p]artial, "
                        "Enter = leave unlabeled: ").strip().lower()
            outcome = {"s": "success", "f": "failure", "p": "partial"}.get(ans[:1])
            if outcome:
                runner.label(r.index, outcome)
    names = {r.name for r in runner.results}
    records = [t for t in load_trials(store.root) if t.name in names]
    print(format_table(summarize(records, by=("policy_id",))), flush=True)


__all__ = ["parse_seeds", "register"]
