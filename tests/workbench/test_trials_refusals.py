"""No stale or wild chunk runs (issue 19.2-3), at the PolicySource itself: its clock is the test's, so ages are
exact. A chunk older than the rig's `[safety] max_chunk_age_s` when it would be entered (or not answered by then) is
refused, the followers hold, a fresh observation is sent; `max_chunk_refusals` in a row abort the run. On a
simulated clock with `delay_ticks` the latency is that many ticks, whatever the wall clock says. The client's reply
timeout follows the age limit on a real-time rig. The trial runner, the CLI and a hostile server over the wire are
tests/workbench/test_trials.py and test_hostile_server.py."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from serving.chunks import ChunkReply, ChunkRequest
from workbench.config import load_rig_config
from workbench.control import Tick
from workbench.deploy.policy_source import ChunksRefused, ExecConfig, PolicySource
from workbench.rig import Observation
from workbench.safety import SafetyConfig

HZ = 50.0
DT = 1.0 / HZ
H = 50
ARM_LO = np.array([-3.14, -1.85, -1.76, -3.14, -1.87, -3.14, 0.0])
ARM_HI = np.array([3.14, 1.26, 1.61, 3.14, 2.23, 3.14, 1.0])
Q0 = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)


def fake_rig(realtime: bool = False, **safety) -> SimpleNamespace:
    """What PolicySource.start reads of a rig: clock, safety config and limits, control rate, followers."""
    cfg = SafetyConfig(**safety)
    return SimpleNamespace(clock=SimpleNamespace(realtime=realtime), sim=None if realtime else object(),
                           config=SimpleNamespace(safety=cfg, control_hz=HZ),
                           follower_names=["follower_left", "follower_right"],
                           safety=SimpleNamespace(config=cfg, limits=lambda name: (ARM_LO.copy(), ARM_HI.copy())))


class GatedPolicy:
    """Answers request n only once the test releases it; chunk n holds the state and moves the left waist by
    `rate[n]` rad per slot (0.004 by default), so executed actions tell which chunk they came from."""

    def __init__(self, rates: dict[int, float] | None = None, wall_s: float = 0.0,
                 wild: dict[int, tuple[int, float]] | None = None):
        self.metadata = {"policy": "gated", "task": "wave"}
        self.rates = rates or {}
        self.wild = wild or {}  # request n -> (joint, value) for its whole chunk
        self.wall_s = wall_s  # extra wall-clock time per request (simulated clocks must not care)
        self.requests: list[ChunkRequest] = []
        self.answered: list[int] = []
        self._gates: list[threading.Event] = []
        self._lock = threading.Lock()
        self.reply_timeout = 30.0  # as RemotePolicy's
        self.busy = False  # inside infer (waiting for its release)

    def gate(self, n: int) -> threading.Event:
        with self._lock:
            while len(self._gates) <= n:
                self._gates.append(threading.Event())
            return self._gates[n]

    def wait_requests(self, n: int) -> int:
        """The number of requests the inference thread has taken, once it is at least n (10 s at most)."""
        end = time.monotonic() + 10
        while len(self.requests) < n and time.monotonic() < end:
            time.sleep(0.002)
        return len(self.requests)

    def release(self, *ns: int) -> None:
        for n in ns:
            self.gate(n).set()

    def infer(self, request: ChunkRequest) -> ChunkReply:
        with self._lock:
            n = len(self.requests)
            self.requests.append(request)
        self.busy = True
        try:
            assert self.gate(n).wait(30), f"request {n} was never released"
        finally:
            self.busy = False
        if self.wall_s:
            time.sleep(self.wall_s)
        chunk = np.tile(np.asarray(request.state, np.float64), (H, 1))
        chunk[:, 0] += self.rates.get(n, 0.004) * np.arange(H)
        if n in self.wild:
            j, v = self.wild[n]
            chunk[:, j] = v
        self.answered.append(n)
        return ChunkReply(chunk, 1.0, 1.0)

    def close(self) -> None:
        for g in self._gates:
            g.set()


class Driver:
    """The control loop's calls on a PolicySource, on a clock the test moves (t = tick * DT unless told)."""

    def __init__(self, source: PolicySource, rig):
        self.source, self.rig = source, rig
        self.index = 0
        self.t = 0.0
        self.actions: list[np.ndarray] = []
        source.start(rig, self.obs())

    def obs(self) -> Observation:
        q = self.actions[-1] if self.actions else Q0
        return Observation(t=self.t, qpos=np.array(q), qvel=np.zeros(14), effort=np.zeros(14), frames={})

    def tick(self, t: float | None = None) -> np.ndarray:
        self.t = self.index * DT if t is None else t
        o = self.obs()
        a = np.array(self.source.action(o))
        self.actions.append(a)
        self.source.observe(Tick(index=self.index, t=self.t, t_wall=0.0, qpos=o.qpos, qvel=o.qvel,
                                 effort=o.effort, action=a, command=a, frames={}))
        self.index += 1
        # as on a rig, where a tick lasts 20 ms: the inference thread has taken a new request (or is busy)
        end = time.monotonic() + 10
        while not self.source._requests.empty() and not self.source.policy.busy and time.monotonic() < end:
            time.sleep(0.0005)
        return a

    def wait_answered(self, policy: GatedPolicy, n: int) -> None:
        end = time.monotonic() + 30
        while n not in policy.answered or (self.source._pending is not None and not self.source._pending.done.is_set()):
            assert time.monotonic() < end, f"request {n} was not answered"
            time.sleep(0.002)


_MADE: list = []


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while _MADE:
        policy, src = _MADE.pop()
        policy.close()
        src.stop()


def make(mode="sync", realtime=False, aborts=None, refusals=None, **kw):
    policy = GatedPolicy(kw.pop("rates", None), kw.pop("wall_s", 0.0), kw.pop("wild", None))
    rig = fake_rig(realtime, **{k: kw.pop(k) for k in list(kw) if k in ("max_chunk_age_s", "max_chunk_refusals")})
    src = PolicySource(policy, "wave", ExecConfig(mode=mode, **kw),
                       on_refused=None if refusals is None else refusals.append,
                       on_abort=None if aborts is None else aborts.append)
    _MADE.append((policy, src))
    return policy, src, Driver(src, rig)


def test_a_reply_not_there_within_the_age_limit_is_refused_and_a_fresh_observation_sent():
    """Sync, the measured case: the first request's reply comes 3 s after its observation. It is refused once its
    observation is older than 0.5 s (the followers hold meanwhile), the next observation goes out at once, and
    when the old reply finally comes none of its 25 actions runs."""
    refused: list = []
    policy, src, d = make("sync", refusals=refused, aborts=[], rates={0: -0.01})
    d.tick()  # tick 0: request 0 (t = 0)
    for _ in range(25):  # t = 0.02 .. 0.50: within the limit, no reply, hold
        d.tick()
    assert not refused and policy.wait_requests(1) == 1
    d.tick()  # tick 26, t = 0.52: too old; the fresh request goes out at this tick's observation
    assert [(r["kind"], r["step"], r["age_s"]) for r in refused] == [("stale", 0, 0.52)]
    assert "no reply 0.52 s after its observation (at most 0.50 s)" in refused[0]["reason"]
    fresh = src._pending  # queued behind the old one, which the (gated) inference thread still waits on
    assert fresh is not None and fresh.tick == 26 and fresh.step == 0
    d.tick()  # tick 27: no reply yet, hold
    policy.release(0)  # the old plan arrives (late) ...
    assert policy.wait_requests(2) == 2
    policy.release(1)
    d.wait_answered(policy, 1)
    for _ in range(30):  # ticks 28..57: the fresh chunk's 25 actions, then hold (sync)
        d.tick()
    a = np.array(d.actions)
    assert np.allclose(a[:28], Q0)  # held until the fresh chunk
    assert (np.diff(a[28:53, 0]) > 0).all()  # ... whose ramp runs,
    assert a[:, 0].min() >= Q0[0] - 1e-12  # never the old one (waist going down)
    (rec,) = src.records
    assert rec.tick == 26 and rec.age_s == pytest.approx(2 * DT)
    assert [r["kind"] for r in src.refusals] == ["stale"] and src.aborted is None


def test_a_reply_that_came_but_would_be_entered_too_late_is_refused():
    """The reply is there, but the tick that would enter it comes 3 s after its observation (a stalled loop, a
    server stopped and resumed): refused by its age on the loop's clock, not by when it arrived."""
    refused: list = []
    policy, src, d = make("async", refusals=refused, aborts=[])
    d.tick()
    policy.release(0)
    d.wait_answered(policy, 0)
    d.tick(t=3.0)
    assert [(r["kind"], r["age_s"]) for r in refused] == [("stale", 3.0)]
    assert "its observation is 3.00 s old" in refused[0]["reason"]
    assert np.allclose(d.actions[-1], Q0) and not src.records


def test_async_asks_again_at_once_while_the_running_chunk_goes_on():
    """Async: chunk 0 runs; the request at slot 25 is not answered within the limit (0.2 s here): refused, and the
    fresh request goes out at that tick (not at slot 50, when the schedule would next ask); chunk 0 keeps running
    until it runs out, then the followers hold."""
    refused: list = []
    policy, src, d = make("async", refusals=refused, aborts=[], max_chunk_age_s=0.2)
    policy.release(0)
    d.tick()
    d.wait_answered(policy, 0)
    while len(policy.requests) < 2:
        d.tick()
    asked = d.index - 1  # the tick that sent request 1 (slot 25)
    while not refused:
        d.tick()
    assert refused[0]["obs_tick"] == asked and d.index - 1 == asked + 11 and src.slot < 50
    fresh = src._pending
    assert fresh is not None and fresh.tick == d.index - 1  # sent with the refusal's tick
    while d.index < 60:  # (the fresh one, unanswered, is refused in turn)
        d.tick()
    waist = np.array(d.actions)[:, 0]
    assert (np.diff(waist[2:51]) > 0).all() and np.allclose(waist[51:], waist[51])  # chunk 0 ran out, then held


def test_refusals_in_a_row_abort_with_their_ages_and_the_followers_hold():
    aborts: list = []
    policy, src, d = make("sync", aborts=aborts, refusals=[], max_chunk_refusals=3)
    for _ in range(100):
        d.tick()
        time.sleep(0.0005)  # the inference thread takes each request off the queue (skipped: gated)
    assert len(aborts) == 1 and src.aborted == aborts[0]
    assert "refused 3 times in a row" in aborts[0] and "observation ages 0.52, 0.52, 0.52 s" in aborts[0]
    assert [r["in_a_row"] for r in src.refusals] == [1, 2, 3]
    n = policy.wait_requests(1)
    assert n == 1  # the first one blocks the (gated) inference thread; the next two were refused while queued
    policy.release(0, 1, 2)
    for _ in range(10):
        d.tick()
    assert len(policy.requests) == n and np.allclose(np.array(d.actions), Q0)
    # without an abort handler the run stops with ChunksRefused (the loop then holds the followers)
    policy, src, d = make("sync", max_chunk_age_s=0.1, max_chunk_refusals=1)
    with pytest.raises(ChunksRefused, match="refused 1 times in a row"):
        for _ in range(10):
            d.tick()


def test_an_accepted_chunk_resets_the_count():
    aborts: list = []
    policy, src, d = make("sync", aborts=aborts, refusals=[], max_chunk_refusals=2)
    for _ in range(27):
        d.tick()  # request 0 refused at tick 26 (t = 0.52); request 1 sent then
    policy.release(0, 1)  # the refused one comes late (dropped), then the fresh one
    d.wait_answered(policy, 1)
    for _ in range(60):  # ticks 27..86: chunk 1 runs 25 actions, request 2 at tick 51 is refused at tick 77
        d.tick()
    policy.release(2, 3)
    d.wait_answered(policy, 3)
    for _ in range(5):
        d.tick()
    assert [r["in_a_row"] for r in src.refusals] == [1, 1] and not aborts and len(src.records) == 2


def test_on_a_simulated_clock_a_fixed_delay_is_that_many_ticks_whatever_the_wall_clock():
    """delay_ticks=3: the world waits for the reply (here 0.8 s of wall time per request, beyond the 0.5 s limit):
    its age is 3 ticks of sim time, and it is entered."""
    refused: list = []
    policy, src, d = make("sync", refusals=refused, aborts=[], delay_ticks=3, wall_s=0.8)
    policy.release(*range(10))
    for _ in range(60):
        d.tick()
    assert not refused and len(src.records) >= 2
    assert all(r.age_s == pytest.approx(3 * DT) for r in src.records)
    with pytest.raises(ValueError, match="more than the rig's \\[safety\\] max_chunk_age_s"):
        make("sync", delay_ticks=30)  # 0.6 s of simulated latency: every chunk would be refused


def test_the_clients_reply_timeout_follows_the_age_limit_on_a_real_time_rig():
    policy, src, d = make("async", realtime=True, max_chunk_age_s=0.3)
    assert policy.reply_timeout == 0.3
    policy, src, d = make("async", realtime=False, max_chunk_age_s=0.3)
    assert policy.reply_timeout == 30.0  # simulated time has no relation to the wall clock


def test_a_wild_chunk_is_refused_before_any_of_it_runs():
    """A chunk asking for 1e6 rad on the left shoulder: refused with the reason, nothing of it executed; the next
    (sane) chunk runs."""
    refused: list = []
    policy, src, d = make("sync", refusals=refused, aborts=[], wild={0: (1, 1e6)})
    policy.release(0, 1)
    d.tick()
    end = time.monotonic() + 10
    while not refused and time.monotonic() < end:
        d.tick()
        time.sleep(0.001)
    assert refused and refused[0]["kind"] == "joint_limits" and refused[0]["joint"] == "left_shoulder"
    assert "left_shoulder asks for 1e+06 rad at action 0, outside its joint limits [-1.850, 1.260]" in \
        refused[0]["reason"]
    d.wait_answered(policy, 1)
    for _ in range(30):
        d.tick()
    a = np.array(d.actions)
    assert np.allclose(a[:, 1], Q0[1]) and len(src.records) == 1 and src.aborted is None


def test_the_rig_file_sets_the_age_limit_and_the_refusals(tmp_path):
    text = (load_rig_config("sim-transfer-cube").text.rstrip() + "\n\n[safety]\nmax_chunk_age_s = 0.25\n"
            "max_chunk_refusals = 5\n")
    f = tmp_path / "rig.toml"
    f.write_text(text)
    cfg = load_rig_config(str(f))
    assert (cfg.safety.max_chunk_age_s, cfg.safety.max_chunk_refusals) == (0.25, 5)
    assert (SafetyConfig().max_chunk_age_s, SafetyConfig().max_chunk_refusals) == (0.5, 3)
    from workbench.config import ConfigError

    for bad in ("max_chunk_age_s = 0", "max_chunk_age_s = 60", "max_chunk_refusals = 0",
                "max_chunk_refusals = 2.5"):
        f.write_text(load_rig_config("sim-transfer-cube").text.rstrip() + f"\n\n[safety]\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split()[0]):
            load_rig_config(str(f))
