"""The whole loop on the simulator, measured: scripted demonstrations -> post-training -> seeded trials -> (round 2)
demonstrator corrections -> training further -> the same trials again.

A regression anywhere in the chain (an off-by-one between actions and observations, a transform's sign, a unit, a
chunk executed late) shows up as a success rate. Every stage writes into OUT and is skipped when its output is
already there, so trials can be re-run on a trained policy and training re-run on an existing dataset:

    OUT/closed_loop.json        the configuration, seeds, per-stage times and results (rewritten after each stage)
    OUT/demos/                  the demonstrations (and, in round 2, the correction rollouts: trial episodes)
    OUT/round1/run/policy/      the post-trained policy (workbench train's run folder)
    OUT/round1/trials/          the trial episodes
    OUT/round2/...              the same after corrections

Seeds: demonstrations 0..N-1 and trials 100000.. by default, never overlapping unless `allow_overlap`. Round 2's
corrections run on fresh seeds (neither demonstration nor trial seeds), so the re-run trials stay held out: the
scripted demonstrator takes over from the current state whenever the policy stalls (no reward progress for
`stall_s`), exactly as an operator would with the leaders, and only those correction spans are added to training
(`--trials corrections`, HG-DAgger).

Heavy work stays out of this process: training is `workbench train` in a child process and the policy is served
by `workbench serve` in another, while the control loop runs here.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from drivers.sim.aloha_sim import task_spec
from finetune import presets
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.policy_source import ExecConfig
from workbench.deploy.trials_service import TRIAL_SEED_BASE  # one base for held-out trial scenes

log = logging.getLogger(__name__)
Say = Callable[[str], None]

CORRECTION_SEED_BASE = 200_000
TOUCHED = "touched, no grasp"  # grippers on the object without the reward's first stage (e.g. the other finger)
TASK_RIGS = {"sim-transfer-cube": "transfer_cube", "sim-insertion": "insertion"}


@dataclass(frozen=True)
class ClosedLoopConfig:
    task: str  # rig preset: sim-transfer-cube | sim-insertion
    demos: int
    trials: int
    out: str
    # the training preset (finetune.presets, `workbench train --config`); None below = the preset's value
    model: str = "small"
    base: str | None = None
    lora: bool | None = None
    steps: int | None = None
    batch: int | None = None
    lr: float | None = None
    device: str | None = None  # training, and serving the policy in the trials
    demo_seeds: tuple[int, ...] | None = None
    trial_seeds: tuple[int, ...] | None = None
    allow_overlap: bool = False
    mode: str = "sync"
    execute_steps: int = 25
    delay_ticks: int | None = None
    ensemble: bool = False  # ACT temporal ensembling (async / rtc)
    noise_seed: int | None = 0  # the policy's sampling noise, seeded per trial and chunk: reproducible rollouts
    episode_s: float = 8.0
    time_limit_s: float | None = None  # trials (default: episode_s)
    rounds: int = 1
    corrections: int | None = None  # round 2 rollouts (default: the number of failed round-1 trials, >= 1)
    correction_steps: int | None = None  # round 2 training steps (default: steps // 2)
    stall_s: float = 2.0
    train_args: tuple[str, ...] = ()  # passed to workbench train as is
    # the chunk check's tolerances (None: workbench.deploy.chunk_check's defaults); the safety layer's caps hold
    chunk_limits: ChunkLimits | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_RIGS:
            raise ValueError(f"--task must be one of {sorted(TASK_RIGS)}, not {self.task!r}")
        self.preset  # validates the preset name
        if self.demos < 1 or self.trials < 1:
            raise ValueError("--demos and --trials must be at least 1")
        if self.rounds not in (1, 2):
            raise ValueError("--rounds is 1 or 2")
        ds, ts = self.seeds()
        if len(ds) != self.demos or len(ts) != self.trials:
            raise ValueError(f"{self.demos} demonstrations and {self.trials} trials need as many seeds; got "
                             f"{len(ds)} and {len(ts)}")
        if set(ds) & set(ts) and not self.allow_overlap:
            raise ValueError(f"demonstration and trial seeds overlap ({sorted(set(ds) & set(ts))[:5]}...): trials "
                             "would not be held out; pass --allow-overlap to measure memorization on purpose")
        self.execution  # validates the execution options

    def seeds(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        demo = self.demo_seeds if self.demo_seeds is not None else tuple(range(self.demos))
        trial = self.trial_seeds if self.trial_seeds is not None else \
            tuple(range(TRIAL_SEED_BASE, TRIAL_SEED_BASE + self.trials))
        return tuple(demo), tuple(trial)

    @property
    def preset(self) -> presets.TrainPreset:
        """The training preset with this configuration's overrides."""
        return presets.preset(self.model).replace(base=self.base, lora=self.lora, steps=self.steps,
                                                   batch_size=self.batch, lr=self.lr, device=self.device)

    @property
    def prompt(self) -> str:
        return task_spec(TASK_RIGS[self.task]).prompt

    @property
    def execution(self) -> ExecConfig:
        extra = {} if self.chunk_limits is None else {"chunk_limits": self.chunk_limits}
        return ExecConfig(mode=self.mode, execute_steps=self.execute_steps, delay_ticks=self.delay_ticks,
                          ensemble=self.ensemble, seed=self.noise_seed, **extra)


@dataclass
class RoundResult:
    round: int
    policy: str
    n: int = 0
    successes: int = 0
    rate: float = 0.0
    ci: tuple[float, float] = (0.0, 1.0)
    stages: dict[str, int] = field(default_factory=dict)  # how far failed trials got (stage -> count)
    # trials that never touched the object: per gripper, the median of their closest approaches (cm): whether the
    # policy did not find the object at all, or found it and missed by a little
    missed_by_cm: dict[str, float] = field(default_factory=dict)
    mean_time_to_success_s: float | None = None
    infer_ms_p50: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)  # per trial: seed, outcome, max reward, episode


@dataclass
class Report:
    config: dict[str, Any]
    demo_seeds: list[int]
    trial_seeds: list[int]
    correction_seeds: list[int] = field(default_factory=list)
    times_s: dict[str, float] = field(default_factory=dict)
    rounds: list[RoundResult] = field(default_factory=list)
    comparison: str | None = None

    def save(self, out: Path) -> None:
        tmp = out / "closed_loop.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, out / "closed_loop.json")

    def format(self) -> str:
        lines = [f"closed loop on {self.config['task']}: {len(self.demo_seeds)} demonstrations, "
                 f"{len(self.trial_seeds)} trials, model {self.config['model']}"
                 + (" (LoRA)" if self.config["lora"] else "") + f", mode {self.config['mode']}"]
        for r in self.rounds:
            lines.append(f"round {r.round}: success {r.successes}/{r.n} = {r.rate:.0%} "
                         f"(Wilson 95% {r.ci[0]:.0%}-{r.ci[1]:.0%})"
                         + ("" if r.mean_time_to_success_s is None else
                            f", mean time to success {r.mean_time_to_success_s:.1f} s")
                         + ("" if r.infer_ms_p50 is None else f", inference p50 {r.infer_ms_p50:.0f} ms/chunk"))
            if r.stages:
                lines.append("  failed trials got as far as: " + ", ".join(f"{k} {v}" for k, v in r.stages.items()))
            if r.missed_by_cm:
                lines.append("  those that missed the object came within (median): "
                             + ", ".join(f"{cm:.1f} cm ({side} gripper)" for side, cm in r.missed_by_cm.items()))
        if self.comparison:
            lines.append(f"round 2 vs round 1: {self.comparison}")
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.times_s.items()))
        return "\n".join(lines)


class StallWatch:
    """When a simulated operator takes over: the policy made no progress for `ticks` (neither a higher task reward
    nor a gripper closing in on its object by `approach_m`), as a person watching the rollout would judge it. A
    rule on reward alone would fire before any policy could reach the object (the first reward comes ~3 s in)."""

    def __init__(self, ticks: int, top: int, approach_m: float = 0.01) -> None:
        self.ticks, self.top, self.approach_m = ticks, top, approach_m
        self.reset()

    def reset(self) -> None:
        self.n = self.since = 0
        self.best_reward = -1
        self.best_reach: dict[str, float] = {}
        self.taken = False

    def update(self, reward: int, reach: dict[str, float]) -> bool:
        """One tick; True when the operator should take over now (once per rollout)."""
        self.n += 1
        progress = reward > self.best_reward
        self.best_reward = max(self.best_reward, reward)
        for side, d in reach.items():
            if d < self.best_reach.get(side, float("inf")) - self.approach_m:
                self.best_reach[side] = d
                progress = True
        if progress:
            self.since = self.n
        return not self.taken and reward < self.top and self.n - self.since > self.ticks


class ClosedLoop:
    def __init__(self, config: ClosedLoopConfig, say: Say = print):
        self.c = config
        self.say = say
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        demo, trial = config.seeds()
        self.preset = config.preset
        cfg = asdict(config)
        p = self.preset  # what runs: the preset's values where the configuration left them open
        cfg.update(base=p.base, lora=p.lora, steps=p.steps, batch=p.batch_size, lr=p.lr, device=p.device)
        self.report = Report(cfg, list(demo), list(trial))
        old = self.out / "closed_loop.json"
        if old.is_file():  # keep the times of stages this run skips
            try:
                self.report.times_s = dict(json.loads(old.read_text()).get("times_s", {}))
            except (ValueError, OSError):
                pass

    # -- stages ----------------------------------------------------------------------------------------------
    def run(self) -> Report:
        self.record_demos()
        steps = self.preset.steps
        policy = self.train(1, self.out / "demos", base=self.preset.base, steps=steps)
        r1 = self.evaluate(1, policy)
        self.report.rounds = [r1]
        self.report.save(self.out)
        if self.c.rounds == 2:
            n = self.c.corrections if self.c.corrections is not None else max(1, r1.n - r1.successes)
            self.collect_corrections(policy, n)
            policy2 = self.train(2, self.out / "demos", base=str(self.out / "round1" / "run"),
                                 steps=self.c.correction_steps or max(1, steps // 2),
                                 extra=("--trials", "corrections"))
            r2 = self.evaluate(2, policy2)
            self.report.rounds = [r1, r2]
            self.report.comparison = self._compare()
        self.report.save(self.out)
        return self.report

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        result = fn()
        self.report.times_s[name] = round(time.monotonic() - t0, 1)
        self.report.save(self.out)
        return result

    def _rig(self):
        from workbench.config import load_rig_config
        from workbench.backends import build_rig

        rig = build_rig(load_rig_config(self.c.task))
        rig.connect(progress=lambda m: None)
        return rig

    def record_demos(self) -> None:
        store = DatasetStore(self.out / "demos")
        have = {read_seed(store, e.name) for e in store.list() if not _is_trial(store, e.name)}
        todo = [s for s in self.report.demo_seeds if s not in have]
        if not todo:
            self.say(f"demonstrations: {len(self.report.demo_seeds)} already in {store.root} (skipped)")
            return

        def record() -> None:
            from workbench.recording import SessionSettings
            from workbench.session import RigSession

            self.say(f"recording {len(todo)} scripted demonstrations on {self.c.task} (seeds {_span(todo)})")
            with RigSession(self._rig()) as session:
                for seed in todo:
                    session.start_recording(store, SessionSettings(task=self.c.prompt, episodes=1,
                                                                   episode_s=self.c.episode_s, seed=seed),
                                            squeeze_timeout=30)
                    session.wait()
                    if session.last_error is not None:
                        raise session.last_error
            bad = [e.name for e in store.list() if e.outcome != "success" and not _is_trial(store, e.name)]
            if bad:
                self.say(f"  note: {len(bad)} demonstrations did not succeed ({', '.join(bad[:5])}); they are kept "
                         "and trained on (the scripted demonstrator's own failures)")

        self._timed("demonstrations", record)

    def train(self, rnd: int, dataset: Path, base: str, steps: int, extra: tuple[str, ...] = ()) -> Path:
        run = self.out / f"round{rnd}" / "run"
        policy = run / "policy"
        if (policy / "policy.json").is_file():
            self.say(f"round {rnd} policy: {policy} exists (training skipped)")
            return policy
        cmd = self.train_command(run, dataset, base, steps, extra)

        def go() -> None:
            self.say(f"round {rnd}: training {self.c.model} from {base} for {steps} steps ({' '.join(extra)})")
            run.mkdir(parents=True, exist_ok=True)
            errlog = run.parent / "train.stderr.log"  # a file, not a pipe: a chatty child never blocks on it
            with open(errlog, "w") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
            try:
                self._follow_training(proc, steps, policy, errlog)
            except BaseException:  # interrupted (Ctrl-C, a timeout): the child stops too, checkpointing first
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise

        self._timed(f"training round {rnd}", go)
        return policy

    def train_command(self, run: Path, dataset: Path, base: str, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
        """The `workbench train` child's command line: the same CLI an operator would type, selecting the preset
        by name (its image caching, precision, ... apply) with this loop's values spelled out."""
        p = self.preset
        cmd = [sys.executable, "-m", "workbench", "train", "--dataset", str(dataset), "--out", str(run),
               "--config", p.name, "--base", base, "--steps", str(steps), "--batch", str(p.batch_size),
               "--lr", str(p.lr), "--device", p.device, "--lora" if p.lora else "--no-lora", "--json",
               # a few validations and checkpoints per run, whatever the length (every 50 steps costs minutes)
               "--val-every", str(max(steps // 10, 1)), "--save-every", str(max(steps // 10, 1)),
               # every demonstration (the scripted demonstrator's failures too, record_demos says so) and every
               # trial's corrections: not the CLI's successes-only default
               "--outcome", "all", *extra]
        if (run / "checkpoints").is_dir():
            cmd.append("--resume")
        return cmd + list(self.c.train_args)  # last: the operator's own arguments win

    def _follow_training(self, proc: subprocess.Popen, steps: int, policy: Path, errlog: Path) -> None:
        """Relays the child's JSON progress (a line every 15 s) until it ends; its failure names the reason."""
        last = 0.0
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "step" and (time.monotonic() - last > 15 or e["step"] == steps):
                last = time.monotonic()
                self.say(f"  step {e['step']}/{steps}: loss {e['loss']:.4f}, {e['samples_per_s']:.0f} samples/s, "
                         f"ETA {e['eta_s']:.0f} s")
            elif e.get("event") in ("error", "stopped"):
                tail.append(json.dumps(e))
        if proc.wait() != 0 or not (policy / "policy.json").is_file():
            err = errlog.read_text(errors="replace")[-1500:] if errlog.is_file() else ""
            raise RuntimeError(f"training failed (exit {proc.returncode}): {' '.join(tail)[-800:]}\n{err}\n"
                               f"(full log: {errlog})")

    def _trials(self, policy_folder: Path, store: DatasetStore, seeds: tuple[int, ...], *, time_limit_s: float,
                on_session=None) -> list:
        from workbench.deploy.policy_launcher import open_policy
        from workbench.session import RigSession
        from workbench.deploy.trials import TrialRunner, TrialSettings, start_trials

        rig = self._rig()
        policy = open_policy(policy_folder, rig=rig.config, device=self.preset.device,
                             log=lambda line: log.info("[server] %s", line))
        try:
            with RigSession(rig) as session:
                def say(e) -> None:
                    if isinstance(e, ev.TrialEnded):
                        extra = f", took over {e.interventions}x" if e.interventions else ""
                        self.say(f"  trial {e.index + 1}/{len(seeds)} seed {seeds[e.index]}: {e.outcome}{extra}")

                session.subscribe(say)
                runner = TrialRunner(rig, store, policy, TrialSettings(
                    prompt=self.c.prompt, trials=len(seeds), time_limit_s=time_limit_s, execution=self.c.execution,
                    seeds=seeds, policy=str(policy_folder)))
                if on_session is not None:
                    on_session(session, runner)
                start_trials(session, runner)
                session.wait()
                if session.last_error is not None:
                    raise session.last_error
                return runner.results
        finally:
            policy.close()

    def evaluate(self, rnd: int, policy: Path) -> RoundResult:
        from workbench.deploy.trial_stats import load_trials, wilson_interval

        store = DatasetStore(self.out / f"round{rnd}" / "trials")
        store.root.mkdir(parents=True, exist_ok=True)
        seeds = tuple(self.report.trial_seeds)
        todo = tuple(s for s, rec in zip(seeds, _match(seeds, load_trials(store.root))) if rec is None)
        if todo:
            self.say(f"round {rnd}: {len(todo)} trials (seeds {_span(todo)}), mode {self.c.mode}")
            self._timed(f"trials round {rnd}", lambda: self._trials(
                policy, store, todo, time_limit_s=self.c.time_limit_s or self.c.episode_s))
        else:
            self.say(f"round {rnd}: {len(seeds)} trials already in {store.root} (skipped)")
        matched = _match(seeds, load_trials(store.root))
        stages = task_spec(TASK_RIGS[self.c.task]).stages
        res = RoundResult(rnd, str(policy))
        infer: list[float] = []
        tts: list[float] = []
        missed: dict[str, list[float]] = {}
        for seed, rec in zip(seeds, matched):
            assert rec is not None, f"trial with seed {seed} missing in {store.root}"
            info = _trial_info(store, rec.name)
            max_reward = int(info.get("max_reward") or 0)
            closest_cm = {side: round(m * 100, 2) for side, m in (info.get("closest_m") or {}).items()}
            res.trials.append({"seed": seed, "outcome": rec.outcome, "max_reward": max_reward, "episode": rec.name,
                               "time_to_success_s": rec.time_to_success_s, "closest_cm": closest_cm})
            touched = bool(closest_cm) and all(cm == 0 for cm in closest_cm.values())
            if rec.outcome != "success" and max_reward == 0 and not touched:
                for side, cm in closest_cm.items():
                    missed.setdefault(side, []).append(cm)
            res.n += 1
            if rec.outcome == "success":
                res.successes += 1
                if rec.time_to_success_s is not None:
                    tts.append(rec.time_to_success_s)
            else:
                name = stages[max_reward - 1] if max_reward else (TOUCHED if touched else "nothing")
                res.stages[name] = res.stages.get(name, 0) + 1
            infer += [c["infer_ms"] for c in info.get("chunks", [])]
        res.rate = res.successes / res.n
        res.missed_by_cm = {side: statistics.median(v) for side, v in missed.items()}
        order = ("nothing", TOUCHED, *stages)  # how far, in order
        res.stages = {k: res.stages[k] for k in order if k in res.stages}
        res.ci = wilson_interval(res.successes, res.n)
        res.mean_time_to_success_s = sum(tts) / len(tts) if tts else None
        if infer:
            res.infer_ms_p50 = sorted(infer)[len(infer) // 2]
        self.say(f"round {rnd}: success {res.successes}/{res.n} = {res.rate:.0%} (Wilson 95% {res.ci[0]:.0%}-"
                 f"{res.ci[1]:.0%})")
        return res

    def collect_corrections(self, policy: Path, n: int) -> None:
        """Round 2's data: rollouts on fresh seeds where the scripted demonstrator takes over when the policy
        stalls; recorded into the demonstrations dataset as trial episodes with correction spans."""
        store = DatasetStore(self.out / "demos")
        used = set(self.report.demo_seeds) | set(self.report.trial_seeds)
        seeds: list[int] = []
        s = CORRECTION_SEED_BASE
        while len(seeds) < n:
            if s not in used:
                seeds.append(s)
            s += 1
        self.report.correction_seeds = seeds
        have = {read_seed(store, e.name) for e in store.list() if _is_trial(store, e.name)}
        todo = tuple(x for x in seeds if x not in have)
        if not todo:
            self.say(f"corrections: {n} rollouts already in {store.root} (skipped)")
            return
        top = task_spec(TASK_RIGS[self.c.task]).max_reward  # the task's success level (sim.max_reward: this episode's)

        def operator(session, runner) -> None:
            sim = session.rig.sim
            stall = StallWatch(round(self.c.stall_s * session.rig.config.control_hz), top)

            def on_event(e) -> None:
                if isinstance(e, ev.TrialStarted):
                    stall.reset()

            def on_tick(tick) -> None:
                src = runner.source
                if stall.update(sim.reward(), sim.reach()) and src is not None and not src.operator:
                    stall.taken = True
                    session.rig.leaders["right"].take_over()  # the scripted hand grabs the following leaders

            session.subscribe(on_event)
            session.add_tick_listener(on_tick)

        self.say(f"round 2: {len(todo)} correction rollouts (seeds {_span(todo)}): the scripted demonstrator takes "
                 f"over after {self.c.stall_s:.1f} s without progress (no higher reward, no gripper closing in)")
        self._timed("corrections", lambda: self._trials(
            policy, store, todo, time_limit_s=(self.c.time_limit_s or self.c.episode_s) * 2, on_session=operator))

    def _compare(self) -> str:
        from workbench.deploy.trial_stats import compare, load_trials, summarize

        groups = []
        for rnd in (1, 2):
            recs = load_trials(self.out / f"round{rnd}" / "trials")
            recs = [replace(r, policy_id=f"round {rnd}") for r in recs]
            groups.append(summarize(recs, by=("policy_id",))[0])
        return compare(groups[1], groups[0]).verdict


def _match(seeds, records) -> list:
    """The trial episode of each seed in order; a seed repeated k times takes its first k episodes (repeats of a
    seed differ by the policy's sampling noise)."""
    from recorder.format import episode_index

    by_seed: dict[int | None, list] = {}
    for r in sorted(records, key=lambda r: episode_index(r.name) or 0):
        by_seed.setdefault(r.seed, []).append(r)
    return [by_seed[s].pop(0) if by_seed.get(s) else None for s in seeds]


def read_seed(store: DatasetStore, name: str) -> int | None:
    from recorder.reader import read_info

    return read_info(store.path(name)).sim_seed


def _is_trial(store: DatasetStore, name: str) -> bool:
    from recorder.reader import read_info

    return read_info(store.path(name)).trial is not None


def _trial_info(store: DatasetStore, name: str) -> dict[str, Any]:
    from recorder.reader import read_info

    return read_info(store.path(name)).trial or {}


def _span(seeds) -> str:
    seeds = list(seeds)
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


__all__ = ["ClosedLoop", "ClosedLoopConfig", "Report", "RoundResult"]
