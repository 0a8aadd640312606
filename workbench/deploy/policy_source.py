"""PolicySource: a chunking policy as an action source of the one control loop.

Inference runs on this source's own thread (a `ChunkPolicy`: normally a client of a policy server process);
the control thread only hands observations over (`observe`, after the tick's frames were taken) and picks the
action for the tick (`action`), so a slow or failing policy never stalls the 50 Hz loop: while no chunk is due
the followers hold the last command.

Time is counted in policy *slots*: every executed policy action is one slot; ticks spent holding (waiting for a
chunk) are not. A request carries the slot of its observation (`step`); the reply's `actions[i]` is meant for slot
`step + i`. The observation of tick n shows the state before tick n's action took effect, so when tick n executed
a policy action the request's step is that action's slot (already done) and the new chunk is entered at the
index of the next slot: its index 0 is never executed twice. That is the alignment of training, where the
recorded observation of step i is paired with the action of step i.

Modes (`ExecConfig.mode`):
- sync: execute `execute_steps` actions (default 25 of 50), then query and hold until the reply arrives;
- async: query every `execute_steps` slots while the current chunk keeps running; a reply is entered at the
  slot it arrives in (latency compensation: the actions for slots that passed during inference are skipped);
- rtc: async, and the request carries the current chunk's not-yet-executed actions as a guided prefix with the
  expected delay (Black et al. 2025), so the new chunk continues the old one instead of jumping;
- `ensemble=True` (async/rtc): ACT's temporal ensembling, querying as often as the policy answers; each slot's
  action is the exponentially weighted mean of every chunk that covers it (oldest weighs most, w = exp(-m i)).

No stale or wild chunk runs. A reply is refused when its observation is older than the rig's
`[safety] max_chunk_age_s` at the tick it would be entered (measured on the loop's clock: the rig's monotonic clock
on hardware, sim time on the simulator, where a fixed `delay_ticks` latency is exactly that many ticks), when no
reply came by then, when the policy failed, and when `chunk_check.check_chunk` finds it wild (outside the joint
limits or the trained range, a jump from the current command, a step beyond the velocity limit). None of a refused
chunk runs: the followers hold (or go on with the chunk they had, in the async modes) and a fresh observation is
sent at once. `max_chunk_refusals` refusals in a row abort the run (`aborted`, `on_abort`): the trial ends there.
On a real-time rig the client's reply timeout (RemotePolicy.reply_timeout) is set to the age limit: a reply that
would be refused is not waited for.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from serving.chunks import ChunkReply, ChunkRequest
from workbench.deploy.chunk_check import ARM_DIMS, ChunkBounds, ChunkLimits, ChunkRefusal, check_chunk
from workbench.deploy.chunk_policy import ChunkPolicy
from workbench.control import Tick
from workbench.rig import Observation, Rig

log = logging.getLogger(__name__)


AGE_EPS_S = 1e-6  # clock rounding: a reply exactly at the age limit (sim time: N ticks of 20 ms) is not older


class ExecMode(str, enum.Enum):
    SYNC = "sync"
    ASYNC = "async"
    RTC = "rtc"


@dataclass(frozen=True)
class ExecConfig:
    mode: ExecMode = ExecMode.SYNC
    execute_steps: int = 25  # sync: actions per chunk before the next query; async/rtc: query every this many slots
    ensemble: bool = False  # ACT temporal ensembling (async/rtc only)
    ensemble_decay: float = 0.01  # ACT's m in w_i = exp(-m * i), i = 0 for the oldest chunk
    # Simulated clocks only: enter every reply exactly this many ticks after its observation, waiting for it if it
    # is late (a deterministic stand-in for inference latency: results do not depend on this machine's speed).
    # None: a reply is entered at the first tick after it arrives (hardware, real-time simulation).
    delay_ticks: int | None = None
    rtc_margin: int = 1  # rtc: frozen prefix = the expected delay in slots plus this margin
    seed: int | None = None  # noise seed of the first chunk (+1 per chunk): reproducible rollouts
    # the wild-chunk check's tolerances (chunk_check); wider ones only for policies known to be rough (simulator
    # tests of the modes with a barely trained model): the safety layer's caps apply whatever these say
    chunk_limits: ChunkLimits = ChunkLimits()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ExecMode(self.mode))
        if self.execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {self.execute_steps}")
        if self.ensemble and self.mode is ExecMode.SYNC:
            raise ValueError("temporal ensembling needs a chunk per tick: use --mode async or rtc with it")
        if self.delay_ticks is not None and self.delay_ticks < 1:
            raise ValueError(f"delay_ticks must be >= 1, got {self.delay_ticks}")


class PromptSource(Protocol):
    """Where the prompt of each chunk comes from: the operator's language commands, or a high-level policy."""

    def prompt(self, step: int) -> tuple[str, str]:
        """(prompt text, who set it: "initial" / "operator" / a planner's name) for a request at slot `step`."""


class OperatorPrompts:
    """The trial's prompt, replaced by the operator's commands (thread-safe: GUI or CLI thread)."""

    def __init__(self, initial: str):
        self._text, self._source = initial, "initial"
        self._lock = threading.Lock()

    def command(self, text: str, source: str = "operator") -> None:
        text = text.strip()
        if not text:
            raise ValueError("an empty language command")
        with self._lock:
            self._text, self._source = text, source

    def prompt(self, step: int) -> tuple[str, str]:
        with self._lock:
            return self._text, self._source


class PolicyError(RuntimeError):
    """The policy failed (server gone, bad reply): the loop stops and the followers hold."""


class ChunksRefused(PolicyError):
    """`max_chunk_refusals` chunks in a row were refused (raised only without an `on_abort` handler)."""


@dataclass
class ChunkRecord:
    """One chunk as executed: for the trial episode and the timing figures."""

    step: int  # slot of the observation
    tick: int  # trial tick of the observation
    prompt: str
    infer_ms: float
    roundtrip_ms: float
    entry: int = 0  # index of its first executed action (the ticks that passed during inference are skipped)
    start: int = -1  # first trial tick that executed one of its actions (-1: never entered)
    loop_tick: int = -1  # control-loop tick index (Tick.index) it was entered at: that tick executes actions[entry]
    delay_ticks: int = -1  # ticks from the observation to that entry
    obs_t_wall: float = 0.0  # perf_counter at the observation tick (end-to-end latency)
    entered_t_wall: float = 0.0  # perf_counter when its first action was handed to the safety layer
    jump: float = 0.0  # largest arm-joint change from the previous command to its first executed action (rad)
    mismatch: float = float("nan")  # largest arm-joint difference, at its entry slot, from the plan it replaced (rad)
    age_s: float = float("nan")  # its observation's age when it was entered, on the loop's clock (s)
    max_step: float = float("nan")  # largest change between two of its consecutive actions (rad)


@dataclass
class _Pending:
    gen: int
    step: int
    tick: int
    prompt: str
    t_wall: float
    t_obs: float  # the loop's clock at its observation (Tick.t): its age is measured from here
    state: np.ndarray  # the joints it was computed from (the trained-range check's reference)
    reply: ChunkReply | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # refused before its reply came: not sent if still queued, its reply dropped


class PolicySource:
    name = "policy"
    WAIT_S = 120.0  # simulated clocks: the longest the world waits for a late reply

    def __init__(self, policy: ChunkPolicy, prompts: PromptSource | str, config: ExecConfig = ExecConfig(),
                 on_chunk: Callable[[ChunkRecord, np.ndarray], None] | None = None,
                 on_prompt: Callable[[str, str, int], None] | None = None,
                 on_refused: Callable[[dict], None] | None = None,
                 on_abort: Callable[[str], None] | None = None):
        self.policy = policy
        self.prompts: PromptSource = OperatorPrompts(prompts) if isinstance(prompts, str) else prompts
        self.config = config
        self.on_chunk = on_chunk  # control thread, cheap: a GUI event with the chunk (plots it ahead of the present)
        self.on_prompt = on_prompt  # control thread: (text, source, tick) when a request first uses a new prompt
        self.on_refused = on_refused  # control thread, cheap: each refusal's record (see `refusals`)
        # control thread: the refusals reached the limit (the message); the followers hold from then on and the
        # handler ends the run (a trial: the loop stops). None: ChunksRefused is raised (the loop holds and stops)
        self.on_abort = on_abort
        self.records: list[ChunkRecord] = []
        # every refused chunk: tick, obs_tick, step, age_s, in_a_row + ChunkRefusal.to_json() (kind, reason, ...)
        self.refusals: list[dict] = []
        self.aborted: str | None = None  # why the run was aborted (refusals in a row), None while it was not
        self.max_age_s = 0.5  # from the rig's [safety] at start()
        self.max_refusals = 3
        self.bounds: ChunkBounds | None = None
        self.prompt_log: list[tuple[int, int, str, str]] = []  # (slot, tick, text, source) when a prompt changed
        self._requests: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._reset_state()
        self.done = False

    def _reset_state(self) -> None:
        self.slot = 0  # policy actions executed
        self.tick = 0  # ticks of this run
        self._chunks: list[tuple[int, np.ndarray, ChunkRecord]] = []  # (start slot, actions, record); newest last
        self._pending: _Pending | None = None
        self._gen = 0
        self._paused = False
        self._executed_this_tick = False
        self._last_action: np.ndarray | None = None
        self._latency_ticks: list[int] = []
        self._requested = 0
        self._last_request_slot = 0
        self.starved_ticks = 0  # async: ticks the current chunk had run out and the followers held
        self._loop_offset = 0  # loop tick index - self.tick, from the last observed tick (the loop's clock)
        self.refusals = []
        self.aborted = None
        self._in_a_row = 0  # refusals since the last chunk that was entered
        self._retry = False  # a chunk was refused: ask again at the next observation, whatever the schedule says

    # -- ActionSource ----------------------------------------------------------------------------------------
    def start(self, rig: Rig, observation: Observation) -> None:
        self._realtime = rig.clock.realtime
        if self.config.delay_ticks is not None and self._realtime:
            raise ValueError("delay_ticks simulates inference latency on a simulated clock; on a real-time rig the "
                             "real latency applies")
        cfg, hz = rig.config.safety, rig.config.control_hz
        check_delay(self.config, cfg.max_chunk_age_s, hz)
        self._reset_state()
        self.max_age_s, self.max_refusals = float(cfg.max_chunk_age_s), int(cfg.max_chunk_refusals)
        self.bounds = ChunkBounds.for_rig(rig.safety, rig.follower_names, hz,
                                          dict(getattr(self.policy, "metadata", {}) or {}), self.config.chunk_limits)
        if rig.sim is None and hasattr(self.policy, "reply_timeout"):
            # real time: a reply later than the age limit would be refused, so the client stops waiting for it then
            # (and starts afresh for the next request); simulated time has no such relation to the wall clock
            self.policy.reply_timeout = self.max_age_s
        self._last_action = observation.qpos.copy()
        self._thread = threading.Thread(target=self._serve, name="policy-inference", daemon=True)
        self._thread.start()

    def action(self, observation: Observation) -> np.ndarray:
        self._adopt(observation.t)
        self._executed_this_tick = False
        a = None if self._paused or self.aborted is not None else self._slot_action(self.slot)
        if a is None:
            if self.config.mode is not ExecMode.SYNC and self._chunks and not self._paused:
                self.starved_ticks += 1
            a = self._last_action
        else:
            self.slot += 1
            self._executed_this_tick = True
            self._last_action = a
        return a

    def observe(self, tick: Tick) -> None:
        """After the tick's frames: ask for the next chunk when it is due (joints and frames of one instant)."""
        # the loop's tick index, so a chunk knows the loop tick it starts at (a request is always observed here
        # before its reply is entered, and a takeover, which skips observe, drops the pending request)
        self._loop_offset = tick.index - self.tick
        if self._pending is None and not self._paused and self.aborted is None and (self._retry or self._due()):
            self._retry = False
            step = self.slot - 1 if self._executed_this_tick else self.slot
            self._request(tick, step)
        self.tick += 1

    def stop(self) -> None:
        self._gen += 1
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    # -- takeover --------------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Control goes elsewhere (the operator's leaders): chunks and a pending reply are dropped."""
        self._paused = True
        self._gen += 1
        if self._pending is not None:
            self._pending.abandoned = True
        self._pending = None
        self._chunks.clear()
        self._in_a_row, self._retry = 0, False

    def resume(self, hold: np.ndarray) -> None:
        """Control comes back: the next chunk is asked from the current state; `hold` until it arrives."""
        self._paused = False
        self._last_action = np.asarray(hold, dtype=np.float64).copy()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def current_chunk(self) -> tuple[int, np.ndarray] | None:
        """(start slot, actions) of the newest chunk."""
        return (self._chunks[-1][0], self._chunks[-1][1]) if self._chunks else None

    # -- internals -------------------------------------------------------------------------------------------
    def _due(self) -> bool:
        if not self._chunks:
            return True
        if self.config.ensemble:
            return True
        start, actions, rec = self._chunks[-1]
        if self.config.mode is ExecMode.SYNC:  # k actions of this chunk executed (or it ran out)
            return self.slot - (start + rec.entry) >= min(self.config.execute_steps, len(actions) - rec.entry)
        # async / rtc: a query every execute_steps slots of policy time, or when the chunk runs out
        return self.slot - self._last_request_slot >= self.config.execute_steps or self.slot - start >= len(actions)

    def _request(self, tick: Tick, step: int) -> None:
        prompt, source = self.prompts.prompt(step)
        if not self.prompt_log or self.prompt_log[-1][2] != prompt:
            self.prompt_log.append((step, self.tick, prompt, source))
            if self.on_prompt is not None:
                self.on_prompt(prompt, source, self.tick)
        prefix, delay = None, 0
        if self.config.mode is ExecMode.RTC and self._chunks:
            start, actions, _ = self._chunks[-1]
            rest = actions[step - start:]
            if len(rest) > 0:
                prefix = rest
                delay = min(len(rest), self._expected_delay() + self.config.rtc_margin)
        seed = None if self.config.seed is None else self.config.seed + self._requested
        self._requested += 1
        images = {name: fr.image for name, fr in tick.frames.items() if fr is not None}
        req = ChunkRequest(state=tick.qpos.copy(), images=images, prompt=prompt, step=step, prefix=prefix,
                           delay=delay, seed=seed)
        self._pending = _Pending(self._gen, step, self.tick, prompt, time.perf_counter(), float(tick.t),
                                 req.state)
        self._last_request_slot = self.slot
        self._requests.put((self._pending, req))

    def _expected_delay(self) -> int:
        if self.config.delay_ticks is not None:
            return self.config.delay_ticks
        recent = self._latency_ticks[-5:]
        return max(recent) if recent else 1

    def _adopt(self, now: float) -> None:
        """Enter a finished reply at this tick (or wait for it, when a simulated delay says it is due now), or
        refuse it (too old at `now`, the loop's clock; failed; wild)."""
        p = self._pending
        if p is None:
            return
        if p.gen != self._gen:
            self._pending = None
            return
        age_ticks = self.tick - p.tick  # ticks since its observation (>= 1 here)
        age = now - p.t_obs
        fixed = self.config.delay_ticks
        if fixed is not None:
            if age_ticks < fixed:
                return
            # a simulated clock: the world waits for the policy, as in a simulated evaluation
            if not p.done.wait(self.WAIT_S):
                self._refuse(p, ChunkRefusal("stale", f"no reply within {self.WAIT_S:.0f} s (the simulation "
                                                      "waited for it)", self.WAIT_S, self.WAIT_S), age)
                return
        elif not p.done.is_set():
            if age > self.max_age_s + AGE_EPS_S:
                self._refuse(p, ChunkRefusal("stale", f"no reply {age:.2f} s after its observation (at most "
                                                      f"{self.max_age_s:.2f} s)", age, self.max_age_s), age)
            return
        self._pending = None
        if p.error is not None:
            self._refuse(p, ChunkRefusal("failed", f"the policy failed: {p.error}"), age)
            return
        if age > self.max_age_s + AGE_EPS_S:
            self._refuse(p, ChunkRefusal("stale", f"its observation is {age:.2f} s old (at most "
                                                  f"{self.max_age_s:.2f} s)", age, self.max_age_s), age)
            return
        reply = p.reply
        assert reply is not None and self.bounds is not None
        entry = self.slot - p.step
        replaced = self._slot_action_plain(self.slot)
        # the running plan would go on in the async modes; in sync the followers hold between chunks
        verdict = check_chunk(reply.actions, self.bounds, state=p.state, current=self._last_action, entry=entry,
                              replaced=replaced if self.config.mode is not ExecMode.SYNC else None)
        if verdict.refusal is not None:
            self._refuse(p, verdict.refusal, age)
            return
        actions = np.asarray(reply.actions, dtype=np.float64)
        # entered at this tick, whose action (computed right after) is actions[entry]: its loop tick is this one
        # the figures the check judged it on: jump (from the current command), mismatch (from the plan it replaces)
        mismatch = verdict.mismatch
        if replaced is not None and mismatch != mismatch and entry < len(actions):  # sync: a figure, not a check
            mismatch = float(np.max(np.abs(actions[entry] - replaced)[ARM_DIMS]))
        rec = ChunkRecord(p.step, p.tick, p.prompt, reply.infer_ms, reply.roundtrip_ms, entry=entry,
                          loop_tick=self._loop_offset + self.tick, obs_t_wall=p.t_wall,
                          jump=0.0 if verdict.jump != verdict.jump else verdict.jump, mismatch=mismatch,
                          age_s=age, max_step=verdict.max_step)
        self._in_a_row = 0
        self._latency_ticks.append(age_ticks)
        self.records.append(rec)
        if self.config.ensemble:
            self._chunks.append((p.step, actions, rec))
            self._chunks = [c for c in self._chunks if c[0] + len(c[1]) > self.slot]
        else:
            self._chunks = [(p.step, actions, rec)]
        if self.on_chunk is not None:
            self.on_chunk(rec, actions)

    def _refuse(self, p: _Pending, refusal: ChunkRefusal, age: float) -> None:
        """None of `p`'s chunk runs; a fresh observation is asked for at once; the limit aborts the run."""
        p.abandoned = True
        self._pending = None
        self._retry = True
        self._in_a_row += 1
        if "\n" in refusal.reason:  # one line for the operator (a connection error may add a diagnosis line)
            refusal = dataclasses.replace(refusal, reason="; ".join(x.strip() for x in refusal.reason.splitlines()
                                                                    if x.strip()))
        rec = {"tick": self.tick, "obs_tick": p.tick, "step": p.step, "age_s": round(float(age), 4),
               "in_a_row": self._in_a_row, **refusal.to_json()}
        self.refusals.append(rec)
        log.warning("policy chunk refused (%s): %s", refusal.kind, refusal.reason)
        if self.on_refused is not None:
            self.on_refused(rec)
        if self._in_a_row >= self.max_refusals and self.aborted is None:
            ages = ", ".join(f"{r['age_s']:.2f}" for r in self.refusals[-self._in_a_row:])
            self.aborted = (f"the policy's chunks were refused {self._in_a_row} times in a row (last: {refusal.kind}: "
                            f"{refusal.reason}; observation ages {ages} s, at most {self.max_age_s:.2f} s); the "
                            "followers hold")
            self._retry = False
            if self.on_abort is None:
                raise ChunksRefused(self.aborted)
            self.on_abort(self.aborted)

    def _slot_action_plain(self, slot: int) -> np.ndarray | None:
        """What the chunks held so far plan for `slot` (before a new one is added)."""
        for start, a, _ in reversed(self._chunks):
            if start <= slot < start + len(a):
                return a[slot - start].copy()
        return None

    def _slot_action(self, slot: int) -> np.ndarray | None:
        covering = [(start, a, rec) for start, a, rec in self._chunks if start <= slot < start + len(a)]
        if not covering:
            return None
        if self.config.ensemble and len(covering) > 1:
            w = np.exp(-self.config.ensemble_decay * np.arange(len(covering)))  # oldest first, as ACT
            action = np.tensordot(w / w.sum(), np.stack([a[slot - s] for s, a, _ in covering]), axes=1)
        else:
            start, a, rec = covering[-1]
            if self.config.mode is ExecMode.SYNC and slot >= start + rec.entry + self.config.execute_steps:
                return None  # sync: k actions per chunk, then hold until the next one
            action = a[slot - start]
        rec = covering[-1][2]
        if rec.start < 0:
            rec.start, rec.delay_ticks = self.tick, self.tick - rec.tick
            rec.entered_t_wall = time.perf_counter()
        return action

    def _serve(self) -> None:
        """The inference thread: one request at a time, in order."""
        while (item := self._requests.get()) is not None:
            pending, req = item
            if pending.abandoned or pending.gen != self._gen:  # refused or dropped while it waited: not sent
                pending.done.set()
                continue
            try:
                pending.reply = self.policy.infer(req)
            except BaseException as exc:  # noqa: BLE001 - handed to the control thread, which holds and stops
                pending.error = exc
            finally:
                pending.done.set()


def check_delay(config: ExecConfig, max_age_s: float, control_hz: float) -> None:
    """A simulated latency (`delay_ticks`) the age limit would refuse every chunk for is a settings error."""
    if config.delay_ticks is not None and config.delay_ticks / control_hz > max_age_s:
        raise ValueError(f"delay_ticks={config.delay_ticks} simulates {config.delay_ticks / control_hz:.2f} s of "
                         f"inference latency, more than the rig's [safety] max_chunk_age_s ({max_age_s:g} s): every "
                         "chunk would be refused as too old")


__all__ = ["ChunkRecord", "ChunksRefused", "ExecConfig", "ExecMode", "OperatorPrompts", "PolicyError",
           "PolicySource", "PromptSource", "check_delay"]
