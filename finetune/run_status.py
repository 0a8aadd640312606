"""What a run folder says about its run, for a listing (the Train tab's runs list): how it ended (its metrics.jsonl's
last Finished / Failed events), whether its policy folder is ready, and whether there is anything to resume.

No torch import: the GUI reads this.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune import events as ev
from finetune.train_state import list_checkpoints

METRICS = "metrics.jsonl"  # finetune.train.METRICS (not imported: that module imports torch)
TRAIN_CONFIG = "train_config.json"


@dataclass(frozen=True)
class RunStatus:
    """ended: "done" (all its steps), "stopped" (cancelled, or killed before it said how it ended), "failed" (a
    Failed event: `error` is its stable name, `message` says what to do). policy: "ready", "stale" (older than the
    last checkpoint) or "missing". resumable: a checkpoint below the run's step count (a finished run has nothing
    left to resume)."""

    ended: str
    policy: str
    step: int | None  # the policy's step, else the last checkpoint's, else None
    total_steps: int | None
    resumable: bool
    error: str = ""
    message: str = ""

    @property
    def label(self) -> str:
        """The listing's one-word-or-so state: "failed", "stopped", "stopped, policy ready", "policy ready", ..."""
        policy = {"ready": "policy ready", "stale": "policy older than its last checkpoint",
                  "missing": "policy missing"}[self.policy]
        if self.ended in ("failed", "stopped"):
            return self.ended + (f", {policy}" if self.policy != "missing" else "")
        return policy


def policy_state(run: Path) -> str:
    """"ready", "stale" (the policy's step is below the last checkpoint's) or "missing" (an export that failed,
    a run killed before it exported)."""
    policy = run / "policy" / "policy.json"
    if not policy.is_file():
        return "missing"
    ckpts = list_checkpoints(run)
    try:
        step = int(json.loads(policy.read_text()).get("step", 0))
    except (ValueError, TypeError):
        return "stale"
    return "stale" if ckpts and ckpts[-1][0] > step else "ready"


def run_status(run: Path) -> RunStatus:
    """The status of run folder `run` (train_config.json, metrics.jsonl, checkpoints/, policy/)."""
    run = Path(run)
    outcome: str | None = None  # the last Finished event's reason (training's, or `workbench policy export`'s)
    failed: ev.Failed | None = None
    try:
        lines = (run / METRICS).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:  # the last attempt decides (a resume and an export append to the same file)
        e = ev.parse(line)
        if isinstance(e, ev.RunStarted):
            outcome, failed = None, None
        elif isinstance(e, ev.Failed):
            failed = e
        elif isinstance(e, ev.Finished):
            outcome = e.reason
            if e.reason != "error":
                failed = None
    ckpts = list_checkpoints(run)
    try:
        total: int | None = int(json.loads((run / TRAIN_CONFIG).read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        total = None
    state = policy_state(run)
    step: int | None = ckpts[-1][0] if ckpts else None
    if state != "missing":
        try:
            step = int(json.loads((run / "policy" / "policy.json").read_text()).get("step", step))
        except (ValueError, TypeError, OSError):
            pass
    resumable = bool(ckpts) and (total is None or ckpts[-1][0] < total)
    if outcome == "error" or failed is not None:  # a failure before RunStarted (the base, the data) or in the loop
        ended = "failed"
    elif ckpts and not resumable:
        ended = "done"
    else:  # cancelled, or killed before it said how it ended
        ended = "stopped"
    return RunStatus(ended, state, step, total, resumable, failed.error if failed else "",
                     failed.message if failed else "")


__all__ = ["RunStatus", "policy_state", "run_status"]
