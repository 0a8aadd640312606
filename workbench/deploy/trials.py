"""Trials: the policy drives the followers of the rig, one recorded episode per rollout.

Per trial: a new scene (simulation: its seed), the followers (and following leaders) move slowly to the start pose
through the safety layer, the start-gap check, then the control loop runs a `TrialSource` until success (read from
the simulator's reward), the time limit, the operator (next / stop), the e-stop, or the policy (its chunks refused
`[safety] max_chunk_refusals` times in a row: too old, failed or wild; the trial ends "aborted", the followers hold
and the next trial runs). The episode is recorded in the
dataset's usual format, marked as a trial: policy id and checkpoint, execution mode, the prompt(s) with their
ticks (lane "prompt"), chunk boundaries and per-chunk inference latency and age, every refused chunk (why, how
old), and the operator's takeover spans (lane
"correction", the HG-DAgger data). The outcome is automatic on the simulator (success / partial: some reward /
failure), and the operator's to give on hardware (`label`), and can be overridden afterwards either way.

The runner runs on the RigSession's control thread as a generic job (`start_trials`, over `RigSession.start_job`:
the session knows nothing of trials); front ends talk to it through thread-safe methods (`next`, `take_over`,
`hand_back`, `command`, `label`) and typed events. `workbench.deploy.trials_service` is what the CLI and the GUI
call: it opens the policy, resolves the settings and runs this runner.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from drivers.arm import SIDES, START_POSE
from recorder.format import TRIAL_ATTR, Segment
from recorder.quality import QualityThresholds
from recorder.store import DatasetStore
from recorder.finalize import SavedEpisode
from recorder.writer import EpisodeWriter
from workbench import events as ev
from workbench.deploy.chunk_policy import ChunkPolicy
from workbench.control import ControlLoop, Tick
from workbench.deploy.policy_source import ChunkRecord, ExecConfig, OperatorPrompts, PolicySource, check_delay
from workbench.rig import Rig
from workbench.deploy.takeover import TakeoverControl, TrialSource, set_following

if TYPE_CHECKING:
    from workbench.session import RigSession

log = logging.getLogger(__name__)


class TrialAborted(RuntimeError):
    """A trial could not start (the start pose was not reached)."""


@dataclass(frozen=True)
class TrialSettings:
    prompt: str
    trials: int = 10
    time_limit_s: float = 20.0
    execution: ExecConfig = ExecConfig()
    seeds: tuple[int, ...] | None = None  # simulation: one per trial (default: continue after the dataset's)
    start_pose: tuple[float, ...] | None = None  # (14,) instead of ALOHA's start pose (an episode's first qpos)
    takeover: bool = True  # leaders follow the followers and can take over (rigs with leaders)
    stop_on_success: bool = True  # simulation: end the trial when the task reward reaches its maximum
    policy: str = ""  # folder / hub id / URL, as given
    policy_id: str = ""  # name in the statistics ("cube@2000"); default from the server's metadata
    checkpoint: str | int | None = None
    reset_s: float = 0.0  # real rigs: time to reset the scene between trials (next skips it)
    training_seeds: tuple[int, ...] | None = None  # simulation: the scenes the policy was trained on (None: unknown)


# how a trial ended that makes it "aborted" whatever the scene looked like ("interrupted": the process never got to
# end it -- a crash, a kill, a full disk -- and the episode was recovered from its journal)
ABORT_REASONS = ("error", "estop", "aborted", "interrupted")


@dataclass
class TrialInfo:
    """The `trial` attribute of a trial episode (JSON)."""

    trial_index: int
    session: str
    policy: str
    policy_id: str
    checkpoint: str | int | None
    mode: str
    execute_steps: int
    ensemble: bool
    delay_ticks: int | None
    prompts: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = ""
    outcome_source: str = "none"
    time_to_success_s: float | None = None
    duration_s: float = 0.0
    seed: int | None = None
    max_reward: float | None = None
    closest_m: dict[str, float] | None = None  # simulation: per gripper, its closest approach to the object (m)
    max_chunk_age_s: float | None = None  # the rig's limit on a chunk's observation age
    # every refused chunk: tick, obs_tick, step, age_s, in_a_row, kind, reason, value, limit, joint, index
    refusals: list[dict[str, Any]] = field(default_factory=list)
    aborted: str | None = None  # ended_by "aborted": why (the refusals in a row), in words
    training_scene: bool | None = None  # simulation: its seed is one the policy was trained on (None: unknown)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class TrialResult:
    index: int
    name: str
    outcome: str
    info: TrialInfo
    saved: SavedEpisode | None = None


def policy_identity(metadata: dict[str, Any], given: str) -> tuple[str, str | int | None]:
    """("name@step", step) from the server's metadata, falling back to what the operator typed. A training run's
    policy folder is `<run>/policy`: then the run's name is the policy's."""
    step = metadata.get("step")
    parts = [p for p in str(metadata.get("policy") or given or "policy").replace("\\", "/").split("/") if p]
    base = parts[-1] if parts else "policy"
    if base == "policy" and len(parts) > 1:
        base = parts[-2]
    return (f"{base}@{step}" if step is not None else base), step


class TrialRunner:
    def __init__(self, rig: Rig, store: DatasetStore, policy: ChunkPolicy, settings: TrialSettings,
                 emit: Callable[[ev.RigEvent], None] = lambda e: None):
        self.rig, self.store, self.policy, self.s = rig, store, policy, settings
        self.emit = emit
        self.results: list[TrialResult] = []  # every saved trial, in order, from the moment it ended (TrialEnded)
        self._results_lock = threading.Lock()
        self.control = TakeoverControl()
        self.prompts = OperatorPrompts(settings.prompt)
        self.session_id = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pid, step = policy_identity(dict(getattr(policy, "metadata", {}) or {}), settings.policy)
        self.policy_id = settings.policy_id or pid
        self.checkpoint = settings.checkpoint if settings.checkpoint is not None else step
        self.source: TrialSource | None = None  # the running trial's source (GUI: takeover state)
        self.current: EpisodeWriter | None = None
        self._next = threading.Event()
        self._stop_all = threading.Event()
        self._loop: ControlLoop | None = None
        check_delay(settings.execution, rig.config.safety.max_chunk_age_s, rig.config.control_hz)
        sim = rig.sim is not None
        if settings.seeds is not None and len(settings.seeds) < settings.trials:
            raise ValueError(f"{settings.trials} trials need {settings.trials} seeds, got {len(settings.seeds)}")
        if sim:
            from workbench.recording import next_sim_seed

            self.seeds = list(settings.seeds) if settings.seeds is not None else \
                [next_sim_seed(store) + k for k in range(settings.trials)]
        else:
            self.seeds = [None] * settings.trials

    # -- front ends (any thread) ------------------------------------------------------------------------------
    def next(self) -> None:
        """End the running trial now (the operator's call: outcome to be labelled) and go on with the next."""
        self._next.set()
        if self._loop is not None:
            self._loop.request_stop()

    def stop(self) -> None:
        """End the running trial and the session."""
        self._stop_all.set()
        self.next()

    def take_over(self) -> None:
        self.control.take_over()

    def hand_back(self) -> None:
        self.control.hand_back()

    def command(self, text: str, source: str = "operator") -> None:
        """A language command: the prompt from the next chunk on (recorded in the "prompt" lane)."""
        self.prompts.command(text, source)

    def label(self, index: int, outcome: str, notes: str | None = None) -> TrialResult:
        """The operator's outcome (and note) for trial `index` (overrides the simulator's); any trial that ended,
        also while the control thread is still finishing the run (a front end labels on TrialEnded)."""
        with self._results_lock:
            pos = next((i for i, r in enumerate(self.results) if r.index == index), None)
            if pos is None:
                raise IndexError(f"trial {index + 1} has not ended (or was not saved)")
            r = self.results[pos]
            if notes is None and r.outcome != "unlabeled" and outcome != r.outcome:
                notes = f"outcome set by the operator (the simulator said {r.outcome})"
            self.store.label(r.name, outcome, notes)  # the label file wins over the recorded outcome everywhere
            r.info.outcome_source = "operator"
            self.results[pos] = labelled = TrialResult(r.index, r.name, outcome, r.info, r.saved)
        return labelled

    # -- control thread ---------------------------------------------------------------------------------------
    def run(self, loop: ControlLoop, stop: threading.Event) -> list[TrialResult]:
        for k in range(self.s.trials):
            if stop.is_set() or self._stop_all.is_set() or self.rig.safety.estopped:
                break
            self._next.clear()
            if k > 0 and not self._revive(k):
                break
            result = self._trial(k, loop, stop)  # in `results` already (from its TrialEnded on)
            if result is None:  # stopped before it ran (start pose not reached, stop, e-stop)
                break
            if self.rig.safety.estopped:
                break
            if k + 1 < self.s.trials and self.rig.sim is None and self.s.reset_s > 0:
                self._reset_wait(stop)
        self.emit(ev.TrialsFinished(list(self.results)))
        return self.results

    def _revive(self, k: int) -> bool:
        """Before trial k: the policy connection restored if the last trial lost it (a dead local server restarted,
        a dropped connection made again; `revive()` of serving.client / policy_launcher). False, with a PolicyLost
        the operator reads as it is, when it cannot be: the trials end there, the followers hold."""
        revive = getattr(self.policy, "revive", None)
        if revive is None:
            return True
        try:
            note = revive()
        except Exception as exc:  # noqa: BLE001 - PolicyConnectionError above all; any failure ends the trials alike
            log.error("policy lost before trial %d: %s", k + 1, exc)
            self.emit(ev.PolicyLost(str(exc), self.s.trials - k))
            return False
        if note:
            log.warning("before trial %d: %s", k + 1, note)
            self.emit(ev.PolicyRevived(note))
        return True

    def _reset_wait(self, stop: threading.Event) -> None:
        self.emit(ev.PhaseChanged(ev.Phase.RESET))
        self._next.clear()
        end = time.monotonic() + self.s.reset_s
        while (left := end - time.monotonic()) > 0 and not stop.is_set() and not self._stop_all.is_set():
            self.emit(ev.Countdown("reset the scene", left))
            if self._next.wait(min(left, 0.5)):
                break

    def _to_start(self, stop: threading.Event) -> bool:
        """Followers and following leaders to the start pose, slowly (the re-alignment speed, farthest joint of
        any arm), then the start-gap check, then the leaders onto the followers' pose (slowly too): following
        starts with no fast leader motion toward the operator's hands."""
        rig, cfg = self.rig, self.rig.config.safety
        pose = np.asarray(self.s.start_pose, dtype=np.float64) if self.s.start_pose is not None else None
        leaders = [rig.leaders[s] for s in SIDES] if self.s.takeover and rig.has_leaders else []
        set_following(rig, leaders, True)  # torque on, weak: they move with the followers, a hand overrides them
        targets = {}
        for i, s in enumerate(SIDES):
            arm = rig.followers[s]
            rig.safety.set_torque(arm.name, True, True)
            goal = pose[i * 7:(i + 1) * 7] if pose is not None else \
                np.concatenate([START_POSE, arm.read().position[6:7]])
            targets[arm.name] = goal
            if leaders:
                targets[leaders[i].name] = goal
        duration = rig.safety.move_duration(targets, cfg.realign_velocity)
        arms = "followers and leaders" if leaders else "followers"
        self.emit(ev.StepMessage(f"Moving the {arms} to the start pose ({duration:.1f} s)"))
        if not rig.safety.move_to(targets, duration, rig.clock, rig.config.control_hz, stop.is_set):
            return False
        with rig.safety.io_lock:
            gap = max(float(np.abs(rig.followers[s].read().position[:6] - targets[rig.followers[s].name][:6]).max())
                      for s in SIDES)
        if gap > cfg.start_gap:
            raise TrialAborted(f"the followers stopped {gap:.2f} rad from the start pose (allowed "
                               f"{cfg.start_gap:.2f}): check for an obstacle or a blocked joint, then start again")
        if leaders:
            with rig.safety.io_lock:
                at = {leaders[i].name: rig.followers[s].read().position.copy() for i, s in enumerate(SIDES)}
            if not rig.safety.move_to(at, rig.safety.move_duration(at, cfg.realign_velocity, minimum=0.0),
                                      rig.clock, rig.config.control_hz, stop.is_set):
                return False
        return True

    def _writer(self, seed: int | None) -> EpisodeWriter:
        cfg = self.rig.config
        return self.store.new_episode(
            list(self.rig.cameras), task=self.s.prompt, rig_config=cfg.text, sim=self.rig.sim is not None,
            sim_seed=seed, control_hz=cfg.control_hz,
            thresholds=QualityThresholds.from_mapping(dict(cfg.quality)))

    def _trial(self, k: int, loop: ControlLoop, stop: threading.Event) -> TrialResult | None:
        rig, hz = self.rig, self.rig.config.control_hz
        seed = self.seeds[k]
        rig.begin_episode(seed)
        self.emit(ev.PhaseChanged(ev.Phase.STARTING))
        if not self._to_start(stop):
            return None
        limit = max(1, int(round(self.s.time_limit_s * hz)))
        writer = self._writer(seed)
        self.current = writer
        trial_tick0 = loop.tick_index

        def on_chunk(rec: ChunkRecord, actions: np.ndarray) -> None:
            self.emit(ev.ChunkArrived(tick=rec.tick, step=rec.step, start_tick=policy_src.tick,
                                      loop_tick=rec.loop_tick, entry=rec.entry, actions=actions,
                                      infer_ms=rec.infer_ms, roundtrip_ms=rec.roundtrip_ms, prompt=rec.prompt))

        self.prompts = OperatorPrompts(self.s.prompt)  # every trial starts from the task's prompt
        execution = self.s.execution
        if execution.seed is not None:  # reproducible noise, different in every trial
            execution = dataclasses.replace(execution, seed=execution.seed + 100_003 * k)
        safety = rig.config.safety

        def on_refused(r: dict) -> None:
            self.emit(ev.ChunkRefused(tick=r["tick"], step=r["step"], kind=r["kind"], reason=r["reason"],
                                      age_s=r["age_s"], max_age_s=safety.max_chunk_age_s, in_a_row=r["in_a_row"],
                                      limit=safety.max_chunk_refusals))

        policy_src = PolicySource(self.policy, self.prompts, execution, on_chunk=on_chunk,
                                  on_prompt=lambda text, src, tick: self.emit(ev.PromptChanged(text, src, tick)),
                                  on_refused=on_refused, on_abort=lambda why: loop.request_stop())
        self.source = source = TrialSource(
            policy_src, self.control, takeover=self.s.takeover,
            on_change=lambda op, tick, why: self.emit(ev.TakeoverChanged(op, tick, why)))
        info = TrialInfo(k, self.session_id, self.s.policy, self.policy_id, self.checkpoint,
                         self.s.execution.mode.value, self.s.execution.execute_steps, self.s.execution.ensemble,
                         self.s.execution.delay_ticks, seed=seed, max_chunk_age_s=safety.max_chunk_age_s,
                         training_scene=None if seed is None or self.s.training_seeds is None
                         else seed in self.s.training_seeds)
        # a trial from its first tick: the marker goes into the journal before any step, so a crash, a full disk or
        # `episodes recover` leaves a trial episode ("interrupted", outcome aborted), never a demonstration that
        # training would take (finetune's default `--trials exclude` reads this marker)
        info.ended_by = "interrupted"
        writer.set_outcome("aborted")
        writer.set_extra_attrs({TRIAL_ATTR: info.to_json()})
        success_tick: list[int] = []
        max_reward = [0.0]
        sim = rig.sim
        closest: dict[str, float] = {}

        def listener(tick: Tick) -> None:
            writer.append(tick)
            if sim is not None:
                r = float(sim.reward())
                max_reward[0] = max(max_reward[0], r)
                for side, d in sim.reach().items():
                    closest[side] = min(closest.get(side, d), d)
                if not success_tick and sim.success:
                    success_tick.append(tick.index - trial_tick0)
                    if self.s.stop_on_success:
                        loop.request_stop()

        self._loop = loop
        loop.add_listener(listener)
        self.emit(ev.TrialStarted(k, self.s.trials, writer.name, seed, self.prompts.prompt(0)[0]))
        self.emit(ev.PhaseChanged(ev.Phase.RUNNING))
        ended_by = "time_limit"
        self._next.clear()  # a Next pressed while the arms moved to the start pose does not end the trial unrun
        try:
            loop.run(source, steps=limit, stop=_Either(stop, self._next))
        except BaseException:
            loop.remove_listener(listener)
            try:  # keep what was recorded: the episode is the evidence of what went wrong
                self._finish(writer, info, source, policy_src, "estop" if rig.safety.estopped else "error",
                             success_tick, max_reward[0], k, closest)
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.error("could not save trial %d: %s", k, exc)
            raise
        finally:
            self._loop = None
            loop.remove_listener(listener)
            self.source = None
            self.current = None
        if success_tick:
            ended_by = "success"
        elif rig.safety.estopped:
            ended_by = "estop"
        elif policy_src.aborted is not None:
            ended_by = "aborted"
        elif stop.is_set() or self._next.is_set():
            ended_by = "operator"
        return self._finish(writer, info, source, policy_src, ended_by, success_tick, max_reward[0], k, closest)

    def _finish(self, writer: EpisodeWriter, info: TrialInfo, source: TrialSource, policy_src: PolicySource,
                ended_by: str, success_tick: list[int], max_reward: float, k: int,
                closest: dict[str, float]) -> TrialResult | None:
        hz = self.rig.config.control_hz
        steps = writer.steps
        info.ended_by = ended_by
        info.duration_s = steps / hz
        info.time_to_success_s = (success_tick[0] + 1) / hz if success_tick else None
        info.prompts = [{"step": slot, "tick": tick, "t": tick / hz, "text": text, "source": src}
                        for slot, tick, text, src in policy_src.prompt_log]
        info.chunks = [{"step": r.step, "tick": r.tick, "start": r.start, "infer_ms": round(r.infer_ms, 3),
                        "roundtrip_ms": round(r.roundtrip_ms, 3), "delay_ticks": r.delay_ticks,
                        # observation -> its first action handed to the safety layer (wall clock)
                        "e2e_ms": round((r.entered_t_wall - r.obs_t_wall) * 1e3, 3) if r.start >= 0 else None,
                        "jump": round(r.jump, 5),
                        "mismatch": None if r.mismatch != r.mismatch else round(r.mismatch, 5),
                        "age_s": None if r.age_s != r.age_s else round(r.age_s, 4),
                        "max_step": None if r.max_step != r.max_step else round(r.max_step, 5)}
                       for r in policy_src.records]
        info.refusals = list(policy_src.refusals)
        info.aborted = policy_src.aborted
        info.interventions = [{"start": iv.start, "end": iv.end if iv.end >= 0 else steps, "reason": iv.reason}
                              for iv in source.interventions]
        outcome = "unlabeled"
        sim = self.rig.sim is not None
        if sim:
            info.max_reward = max_reward
            info.closest_m = {side: round(d, 4) for side, d in closest.items()}
            outcome = "success" if success_tick else ("partial" if max_reward > 0 else "failure")
            info.outcome_source = "auto"
        # cut short by an error, the e-stop or refused chunks (or, where the simulator judges, the operator): says
        # nothing of the policy, so it is not a failure (the statistics keep aborted trials apart). On a real rig
        # the operator's early end is an ordinary trial the operator labels
        if not success_tick and (ended_by in ABORT_REASONS or (sim and ended_by == "operator")):
            outcome, info.outcome_source = "aborted", "auto"
        if steps == 0:
            writer.discard()
            return None
        writer.set_outcome(outcome)
        writer.set_extra_attrs({TRIAL_ATTR: info.to_json()})
        saved = writer.stop()
        segments = list(saved.segments) + trial_segments(info, steps)
        if segments != list(saved.segments):
            self.store.set_segments(saved.name, segments)
        result = TrialResult(k, saved.name, outcome, info, saved)
        with self._results_lock:  # before TrialEnded: a front end may label it the moment it hears of it
            self.results.append(result)
        self.emit(ev.TrialEnded(k, saved.name, outcome, info.outcome_source, ended_by, info.duration_s,
                                info.time_to_success_s, len(info.interventions), info, message=info.aborted or ""))
        return result


def start_trials(session: "RigSession", runner: TrialRunner) -> TrialRunner:
    """The runner on the session's control thread (mode TRIAL, its events through the session's subscribers);
    `session.stop()` and the e-stop end the running trial and the rest. The followers hold afterwards."""
    runner.emit = session.emit
    session.start_job(runner.run, mode=ev.Mode.TRIAL, context="Trials", on_stop=runner.stop)
    return runner


def trial_segments(info: TrialInfo, steps: int) -> list[Segment]:
    """The prompt lane (each prompt from the tick of its first request) and the correction lane."""
    out: list[Segment] = []
    prompts = sorted(info.prompts, key=lambda p: p["tick"])
    for i, p in enumerate(prompts):
        start = 0 if i == 0 else min(int(p["tick"]), steps)
        end = steps if i + 1 == len(prompts) else min(int(prompts[i + 1]["tick"]), steps)
        if end > start:
            out.append(Segment(start, end, p["text"], "prompt"))
    for iv in info.interventions:
        s, e = min(iv["start"], steps), min(iv["end"], steps)
        if e > s:
            out.append(Segment(s, e, "correction", "correction"))
    return out


class _Either:
    """Looks like a threading.Event to the control loop: set when either event is."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


__all__ = ["TrialAborted", "TrialInfo", "TrialResult", "TrialRunner", "TrialSettings", "policy_identity",
           "start_trials", "trial_segments"]
