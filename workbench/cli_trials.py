"""`workbench trials`: policy rollouts on a rig from the terminal, recorded as trial episodes, with a summary."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.cli_keys import RawKeys

if TYPE_CHECKING:
    from workbench.deploy.trials_service import TrialsRequest


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
    p.add_argument("--seeds", default=None, help="simulator: seeds, e.g. 100-119 or 3,5,8 (default: held out from the "
                                                 "policy's training scenes, from 100000 on)")
    p.add_argument("--time-limit-s", type=float, default=20.0, help="trial time limit in seconds (20)")
    p.add_argument("--dataset", type=Path, default=None, help="dataset folder for the trial episodes "
                                                              "(default: <data root>/trials/<policy name>)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="where the default dataset goes (default ~/aloha_data, as the app's; the app uses the "
                        "folder of its recording dataset)")
    p.add_argument("--no-takeover", action="store_true", help="leaders do not follow the followers")
    p.add_argument("--device", default="auto", help="inference device of the local policy server (auto, cuda, cpu)")
    p.add_argument("--tls-ca", default=None, help="CA file the wss:// server's certificate is checked against "
                   "(default $WORKBENCH_TLS_CA, else the system's)")
    p.add_argument("--policy-config", default=None, metavar="NAME",
                   help="how an openpi checkpoint (no config.json) was trained, e.g. pi0_aloha_sim (as `workbench "
                        "serve --config`)")
    p.add_argument("--allow-sim-policy", action="store_true",
                   help="run a policy trained on a simulator on real arms (refused otherwise)")
    p.set_defaults(func=_trials)


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


def request_from_args(args) -> "TrialsRequest":
    """The flags as the service's request (the Trials tab builds the same from its fields)."""
    from workbench.deploy.policy_source import ExecConfig
    from workbench.deploy.trials_service import TrialsRequest

    execution = ExecConfig(mode=args.mode, execute_steps=args.execute_steps, ensemble=args.ensemble,
                           delay_ticks=args.delay_ticks)
    return TrialsRequest(policy=args.policy, trials=args.trials, prompt=args.prompt or "", dataset=args.dataset,
                         data_root=args.data_root, seeds=args.seeds or "", execution=execution,
                         time_limit_s=args.time_limit_s, takeover=not args.no_takeover, device=args.device,
                         api_key=args.api_key, tls_ca=args.tls_ca, allow_sim_policy=args.allow_sim_policy,
                         policy_config=args.policy_config)


def _trials(args) -> int:
    from workbench import events as ev
    from workbench.cli_session import print_event, run_session
    from workbench.config import load_rig_config
    from workbench.deploy.trials_service import TrialsService

    service = TrialsService(request_from_args(args), load_rig_config(args.rig))
    print(f"starting the policy ({args.policy}) ...", flush=True)
    with service:  # the policy (and its server process) is closed on every path
        plan = service.open(log=lambda line: print(f"  [server] {line}", flush=True))
        if service.recovered is not None and (service.recovered.recovered or service.recovered.quarantined):
            print(service.recovered.format(), flush=True)
        if plan.seeds_text():
            print(plan.seeds_text(), flush=True)
        keys = None

        def on_event(e) -> None:
            if isinstance(e, ev.TrialStarted):
                seed = "" if e.seed is None else f", seed {e.seed}"
                print(f"trial {e.index + 1}/{e.total} ({e.name}{seed}): {e.prompt!r}", flush=True)
            elif isinstance(e, ev.TrialEnded):
                tts = "" if e.time_to_success_s is None else f", success at {e.time_to_success_s:.1f} s"
                if e.ended_by == "aborted":
                    print(f"  -> {e.outcome} (aborted: {e.message})", flush=True)
                else:
                    print(f"  -> {e.outcome} ({e.ended_by}{tts}, {e.interventions} interventions)", flush=True)
            elif isinstance(e, ev.ChunkRefused):
                print(f"  chunk refused ({e.in_a_row}/{e.limit} in a row, {e.kind}): {e.reason}; holding, asking "
                      "again", flush=True)
            elif isinstance(e, ev.TakeoverChanged):
                print(f"  {'operator took over' if e.operator else 'policy back in control'} ({e.reason})",
                      flush=True)
            elif isinstance(e, ev.PromptChanged):
                print(f"  prompt: {e.text!r}", flush=True)
            elif isinstance(e, ev.PolicyRevived):
                print(f"policy server: {e.message}", flush=True)
            elif isinstance(e, ev.PolicyLost):
                print(f"policy lost: {e.message}\n  {e.trials_left} trial{'s' if e.trials_left != 1 else ''} not "
                      "run; the followers hold", flush=True)
            elif not isinstance(e, (ev.ChunkArrived, ev.TrialsFinished)):
                print_event(e)

        def start(session) -> None:
            nonlocal keys
            runner = service.start(session)
            if sys.stdin.isatty():
                keys = TrialKeys(runner).with_estop(session)  # e / space / Esc: the e-stop
                keys.start()

        safety = service.rig_config.safety
        print(f"{plan.describe()}: {args.trials} trials on {args.rig}, mode {args.mode}; episodes in "
              f"{plan.dataset}; chunks older than {safety.max_chunk_age_s:g} s or wild are refused, "
              f"{safety.max_chunk_refusals} in a row abort a trial", flush=True)
        try:
            run_session(args.rig, start, on_event=on_event)
        finally:
            if keys is not None:
                keys.stop()
        if service.runner is not None:
            _summary(service, ask=sys.stdin.isatty())
    return 0


def _summary(service, ask: bool) -> None:
    """Labels for the trials no simulator judged (asked on a terminal), then the success-rate table."""
    from workbench.deploy.trial_stats import format_table, summarize

    if ask:
        for r in service.unlabeled():
            ans = input(f"outcome of trial {r.index + 1} ({r.name}): [s]uccess, [f]ailure, [p]artial, "
                        "Enter = leave unlabeled: ").strip().lower()
            outcome = {"s": "success", "f": "failure", "p": "partial"}.get(ans[:1])
            if outcome:
                service.label(r.index, outcome)
    print(format_table(summarize(service.records(), by=("policy_id",))), flush=True)


__all__ = ["TrialKeys", "register", "request_from_args"]
