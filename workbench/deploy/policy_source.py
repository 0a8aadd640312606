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
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from drivers.arm import BIMANUAL_DOF
from serving.chunks import ChunkReply, ChunkRequest
from workbench.deploy.chunk_policy import ChunkPolicy
from workbench.control import Tick
from workbench.rig import Observation, Rig

log = logging.getLogger(__name__)


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
    jump: float = 0.0  # largest joint change between the previous action and its first executed one (rad)
    mismatch: float = float("nan")  # largest joint difference, at its entry slot, from the plan it replaced (rad)
    _replaced: np.ndarray | None = None  # the previous chunk's action for the entry slot (None: it had none)


@dataclass
class _Pending:
    gen: int
    step: int
    tick: int
    prompt: str
    t_wall: float
    reply: ChunkReply | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class PolicySource:
    name = "policy"
    WAIT_S = 120.0  # simulated clocks: the longest the world waits for a late reply

    def __init__(self, policy: ChunkPolicy, prompts: PromptSource | str, config: ExecConfig = ExecConfig(),
                 on_chunk: Callable[[ChunkRecord, np.ndarray], None] | None = None,
                 on_prompt: Callable[[str, str, int], None] | None = None):
        self.policy = policy
        self.prompts: PromptSource = OperatorPrompts(prompts) if isinstance(prompts, str) else prompts
        self.config = config
        self.on_chunk = on_chunk  # control thread, cheap: a GUI event with the chunk (plots it ahead of the present)
        self.on_prompt = on_prompt  # control thread: (text, source, tick) when a request first uses a new prompt
        self.records: list[ChunkRecord] = []
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

    # -- ActionSource ----------------------------------------------------------------------------------------
    def start(self, rig: Rig, observation: Observation) -> None:
        self._realtime = rig.clock.realtime
        if self.config.delay_ticks is not None and self._realtime:
            raise ValueError("delay_ticks simulates inference latency on a simulated clock; on a real-time rig the "
                             "real latency applies")
        self._reset_state()
        self._last_action = observation.qpos.copy()
        self._thread = threading.Thread(target=self._serve, name="policy-inference", daemon=True)
        self._thread.start()

    def action(self, observation: Observation) -> np.ndarray:
        self._adopt()
        self._executed_this_tick = False
        a = None if self._paused else self._slot_action(self.slot)
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
        if self._pending is None and not self._paused and self._due():
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
        self._pending = None
        self._chunks.clear()

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
        self._pending = _Pending(self._gen, step, self.tick, prompt, time.perf_counter())
        self._last_request_slot = self.slot
        self._requests.put((self._pending, req))

    def _expected_delay(self) -> int:
        if self.config.delay_ticks is not None:
            return self.config.delay_ticks
        recent = self._latency_ticks[-5:]
        return max(recent) if recent else 1

    def _adopt(self) -> None:
        """Enter a finished reply at this tick (or wait for it, when a simulated delay says it is due now)."""
        p = self._pending
        if p is None:
            return
        if p.gen != self._gen:
            self._pending = None
            return
        age = self.tick - p.tick  # ticks since its observation (>= 1 here)
        fixed = self.config.delay_ticks
        if fixed is not None:
            if age < fixed:
                return
            # a simulated clock: the world waits for the policy, as in a simulated evaluation
            if not p.done.wait(self.WAIT_S):
                raise PolicyError(f"the policy did not answer within {self.WAIT_S:.0f} s")
        elif not p.done.is_set():
            return
        self._pending = None
        if p.error is not None:
            raise PolicyError(f"the policy failed: {p.error}") from p.error
        reply = p.reply
        assert reply is not None
        actions = np.asarray(reply.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != BIMANUAL_DOF or len(actions) == 0 \
                or not np.all(np.isfinite(actions)):
            raise PolicyError(f"the policy answered actions of shape {actions.shape} (need [H, {BIMANUAL_DOF}], "
                              "finite)")
        # entered at this tick, whose action (computed right after) is actions[entry]: its loop tick is this one
        rec = ChunkRecord(p.step, p.tick, p.prompt, reply.infer_ms, reply.roundtrip_ms, entry=self.slot - p.step,
                          loop_tick=self._loop_offset + self.tick, obs_t_wall=p.t_wall)
        self._latency_ticks.append(age)
        self.records.append(rec)
        rec._replaced = self._slot_action_plain(self.slot)
        if self.config.ensemble:
            self._chunks.append((p.step, actions, rec))
            self._chunks = [c for c in self._chunks if c[0] + len(c[1]) > self.slot]
        else:
            self._chunks = [(p.step, actions, rec)]
        if self.on_chunk is not None:
            self.on_chunk(rec, actions)

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
            if self._last_action is not None:
                rec.jump = float(np.max(np.abs(action - self._last_action)))
            if rec._replaced is not None:
                rec.mismatch = float(np.max(np.abs(action - rec._replaced)))
        return action

    def _serve(self) -> None:
        """The inference thread: one request at a time, in order."""
        while (item := self._requests.get()) is not None:
            pending, req = item
            try:
                pending.reply = self.policy.infer(req)
            except BaseException as exc:  # noqa: BLE001 - handed to the control thread, which holds and stops
                pending.error = exc
            finally:
                pending.done.set()


__all__ = ["ChunkRecord", "ExecConfig", "ExecMode", "OperatorPrompts", "PolicyError", "PolicySource",
           "PromptSource"]
