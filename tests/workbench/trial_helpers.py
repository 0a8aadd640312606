"""Policies and session plumbing shared by the trial tests (the served / trained policies live in finetune tests)."""
from __future__ import annotations

import threading
import time

import numpy as np

from recorder.store import DatasetStore
from workbench import events as ev
from workbench.deploy.chunk_policy import ChunkPolicy, InProcessPolicy
from workbench.deploy.policy_source import ExecConfig
from workbench.session import RigSession
from workbench.deploy.trials import TrialRunner, TrialSettings, start_trials

H = 50


class RampPolicy:
    """Each chunk starts at the observed state and moves the left waist by `rate` rad per slot; remembers every
    request (prompt, step, prefix) so tests can see what the policy was asked."""

    def __init__(self, rate: float = 0.004, latency_s: float = 0.0):
        self.rate, self.latency_s = rate, latency_s
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def metadata(self) -> dict:
        return {"policy": "runs/ramp/policy", "step": 7, "task": "wave"}

    def infer(self, state, images, prompt, seed=None, step=None, prefix=None, delay=0):
        with self.lock:
            self.requests.append({"prompt": prompt, "step": step, "prefix": None if prefix is None else
                                  np.array(prefix), "delay": delay, "cameras": sorted(images)})
        if self.latency_s:
            time.sleep(self.latency_s)
        chunk = np.tile(np.asarray(state, dtype=np.float64), (H, 1))
        chunk[:, 0] += self.rate * np.arange(H)
        return chunk


class FailingPolicy(RampPolicy):
    def __init__(self, fail_at: int = 2):
        super().__init__()
        self.fail_at = fail_at

    def infer(self, *a, **k):
        if len(self.requests) >= self.fail_at:
            raise ConnectionError("policy server went away")
        return super().infer(*a, **k)


def run_trials(session: RigSession, store: DatasetStore, policy, timeout: float = 240, during=None,
               **settings) -> tuple[TrialRunner, list]:
    """Start trials with `policy` (a runtime-like object or a ChunkPolicy); `during(runner, events)` runs on this
    thread while they run; returns the runner and every event."""
    seen: list = []
    session.subscribe(seen.append)
    settings.setdefault("prompt", "wave")
    settings.setdefault("trials", 1)
    settings.setdefault("execution", ExecConfig())
    chunk_policy = policy if isinstance(policy, ChunkPolicy) else InProcessPolicy(policy)
    runner = TrialRunner(session.rig, store, chunk_policy, TrialSettings(**settings))
    start_trials(session, runner)
    if during is not None:
        during(runner, seen)
    assert session.wait(timeout), "the trials did not end"
    session.unsubscribe(seen.append)
    return runner, seen


def wait_event(seen: list, kind, timeout: float = 60.0, where=lambda e: True):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for e in list(seen):
            if isinstance(e, kind) and where(e):
                return e
        time.sleep(0.01)
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def ticks_of(session: RigSession) -> list:
    ticks: list = []
    session.add_tick_listener(ticks.append)
    return ticks


__all__ = ["FailingPolicy", "RampPolicy", "run_trials", "ticks_of", "wait_event", "ev"]
