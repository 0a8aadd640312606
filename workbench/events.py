"""Typed events a `RigSession` emits: what front ends (the Qt adapter, the CLI) show, never strings to parse.

They are emitted on the thread that caused them (usually the control thread); a subscriber must be cheap and
must not call back into the session. The Qt adapter re-emits them as queued signals on the GUI thread.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Union


class Mode(enum.Enum):
    IDLE = "idle"
    TELEOP = "teleop"
    RECORDING = "recording"
    REPLAY = "replay"
    TRIAL = "trial"


class Phase(enum.Enum):
    """Where a running mode is: the GUI's checklist and headline follow this."""

    STARTING = "starting"  # start-up sequence (torque, start pose)
    WAITING_FOR_SQUEEZE = "waiting_for_squeeze"
    ALIGNING = "aligning"  # closing a leader-follower gap slowly
    RUNNING = "running"  # the control loop drives the followers
    COUNTDOWN = "countdown"  # before an episode (real rigs)
    RESET = "reset"  # between episodes (real rigs)
    STOPPING = "stopping"  # shutdown sequence
    IDLE = "idle"


@dataclass(frozen=True)
class ModeChanged:
    mode: Mode


@dataclass(frozen=True)
class PhaseChanged:
    phase: Phase


@dataclass(frozen=True)
class StepMessage:
    """One step of a sequence, in words for the operator ("Moving all arms to the start pose")."""

    text: str


@dataclass(frozen=True)
class Countdown:
    what: str  # "episode 2/5 starts in", "reset the scene"
    seconds_left: float


@dataclass(frozen=True)
class EpisodeStarted:
    number: int  # 1-based within the session
    total: int
    name: str  # episode_12
    seed: int | None  # simulation seed


@dataclass(frozen=True)
class EpisodeSaved:
    episode: Any  # recorder.finalize.SavedEpisode (path, steps, quality report...)
    outcome: str  # success / failure / unlabeled


@dataclass(frozen=True)
class EpisodeDiscarded:
    name: str
    rerecord: bool  # True: the same episode number is recorded again


@dataclass(frozen=True)
class ReplayFinished:
    result: Any  # workbench.replay.ReplayResult


@dataclass(frozen=True)
class EstopChanged:
    engaged: bool
    reason: str


@dataclass(frozen=True)
class SessionError:
    error: BaseException
    context: str  # what was being done: "Teleop start-up", "Recording", "Replay"


@dataclass(frozen=True)
class Stopped:
    """A mode ended. `reason`: done (ran its course), operator (stop()), estop, error."""

    mode: Mode
    reason: str
    summary: Any = None  # workbench.timing.TimingSummary of the control loop, if it ran
    held: bool = False  # True: the followers hold where they are (e-stop or error), no shutdown sequence ran


# -- trials (plain data, emitted by workbench.deploy.trials) ---------------------------------------------------
@dataclass(frozen=True)
class TrialStarted:
    index: int  # 0-based within the session
    total: int
    name: str  # the episode being recorded
    seed: int | None
    prompt: str


@dataclass(frozen=True)
class ChunkArrived:
    """A policy chunk entered execution: `actions[i]` is meant for trial tick `start_tick + i - entry`, i.e. loop
    tick `loop_tick + i - entry` (front ends place it on the rig clock from that, never by guessing)."""

    tick: int  # trial tick of its observation
    step: int  # policy slot of its observation: actions[i] is meant for slot step + i
    start_tick: int  # trial tick that executes its first used action
    loop_tick: int  # control-loop tick index (`Tick.index`) that executes that action: where the chunk lies in time
    entry: int  # index of that action in `actions`
    actions: Any  # np.ndarray [H, 14], rig units
    infer_ms: float
    roundtrip_ms: float
    prompt: str


@dataclass(frozen=True)
class ChunkRefused:
    """A policy chunk was refused before any of it ran: too old (its observation older than the rig's
    `[safety] max_chunk_age_s` when it would be entered, or no reply by then), failed, or asking for what the arms
    must not do (workbench.deploy.chunk_check). None of it runs: the followers hold (or go on with the chunk they
    had) and a fresh observation is sent. `in_a_row` reaching `limit` aborts the trial (TrialEnded "aborted")."""

    tick: int  # trial tick of the refusal
    step: int  # policy slot of its observation
    kind: str  # stale / failed / shape / non_finite / joint_limits / trained_range / jump / velocity
    reason: str  # one line for the operator
    age_s: float  # from its observation to the refusal, on the rig's clock (s)
    max_age_s: float  # the rig's limit
    in_a_row: int  # refusals in a row, this one included
    limit: int  # refusals in a row that abort the trial


@dataclass(frozen=True)
class TakeoverChanged:
    operator: bool  # True: the leaders drive the followers; False: the policy does
    tick: int
    reason: str  # "squeeze", "pedal", "released", "trial ended"


@dataclass(frozen=True)
class PromptChanged:
    text: str
    source: str  # "initial", "operator" or a planner's name
    tick: int


@dataclass(frozen=True)
class TrialEnded:
    index: int
    name: str  # episode name
    outcome: str  # success / failure / partial / unlabeled (the operator labels it then)
    outcome_source: str  # auto (simulator reward) / operator / none
    ended_by: str  # success / time_limit / operator / estop / error / aborted (the policy's chunks were refused)
    duration_s: float
    time_to_success_s: float | None
    interventions: int
    trial: Any = None  # workbench.deploy.trials.TrialInfo
    message: str = ""  # aborted: why, in one line for the operator


@dataclass(frozen=True)
class PolicyRevived:
    """Between trials the policy connection was restored: a dead local server restarted, or a dropped connection
    made again. The trial it failed in had ended aborted; the next one runs."""

    message: str


@dataclass(frozen=True)
class PolicyLost:
    """The policy cannot be reached again (a server that stays away, or a local one that died too often): the
    trials end here, the followers hold. `message` says why and what to do, for the operator as it is."""

    message: str
    trials_left: int


@dataclass(frozen=True)
class TrialsFinished:
    results: Any  # list[workbench.deploy.trials.TrialResult]


RigEvent = Union[ModeChanged, PhaseChanged, StepMessage, Countdown, EpisodeStarted, EpisodeSaved,
                     EpisodeDiscarded, ReplayFinished, EstopChanged, SessionError, Stopped, TrialStarted,
                     ChunkArrived, ChunkRefused, TakeoverChanged, PromptChanged, TrialEnded, PolicyRevived, PolicyLost,
                     TrialsFinished]
Subscriber = Callable[[RigEvent], None]
