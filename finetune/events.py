"""Typed training events: what the trainer reports, as JSON lines (metrics.jsonl, `--json` stdout, the GUI).

One line per event, {"event": <kind>, ...fields}. No torch import: the GUI and the SSH client parse these
without loading the trainer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union


@dataclass(frozen=True)
class RunStarted:
    kind: ClassVar[str] = "started"
    run_dir: str
    start_step: int
    total_steps: int
    world_size: int
    device: str
    precision: str
    trainable_params: int
    total_params: int
    global_batch: int
    resumed: bool = False
    # what the weights started from: `base` as given (hub id, folder, earlier run, or "random" for random weights),
    # `base_path` the folder its weights were read from ("" for random weights), `model` the variant built
    base: str = ""
    base_path: str = ""
    model: str = ""


@dataclass(frozen=True)
class Download:
    """Bytes of a base checkpoint download (huggingface-hub); total 0 when unknown."""

    kind: ClassVar[str] = "download"
    what: str
    done: int
    total: int


@dataclass(frozen=True)
class Status:
    """A phase change worth showing (loading data, building the model, compiling, ...)."""

    kind: ClassVar[str] = "status"
    text: str


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = "step"
    step: int  # updates done so far (1 after the first)
    loss: float
    lr: float
    grad_norm: float
    samples_per_s: float
    eta_s: float
    elapsed_s: float
    gpu_mem_gb: float | None = None


@dataclass(frozen=True)
class Validation:
    """Held-out loss and the error of sampled chunks in rig units (radians; grippers in their own units)."""

    kind: ClassVar[str] = "validation"
    step: int
    val_loss: float
    action_mae: float | None = None
    action_mae_per_joint: list[float] = field(default_factory=list)
    joint_names: list[str] = field(default_factory=list)
    ema: bool = False


@dataclass(frozen=True)
class CheckpointSaved:
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class PolicySaved:
    kind: ClassVar[str] = "policy"
    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """reason: "done", "cancelled" (checkpoint written, resumable) or "error" (see the Failed event)."""

    kind: ClassVar[str] = "finished"
    step: int
    reason: str
    policy_dir: str | None = None


@dataclass(frozen=True)
class Failed:
    """error: a stable name (no_cuda, out_of_memory, no_episodes, not_pi0, nan_loss, disk_full, ...); message
    says what to do."""

    kind: ClassVar[str] = "failed"
    error: str
    message: str
    step: int | None = None


Event = Union[RunStarted, Download, Status, Step, Validation, CheckpointSaved, PolicySaved, Finished, Failed]
EVENT_TYPES: dict[str, type] = {t.kind: t for t in (RunStarted, Download, Status, Step, Validation, CheckpointSaved,
                                                      PolicySaved, Finished, Failed)}


def to_json(event: Event) -> str:
    return json.dumps({"event": event.kind, **dataclasses.asdict(event)}, separators=(",", ":"))


def parse(line: str) -> Event | None:
    """One JSON line -> its event; None for anything else (plain log lines, partial lines, unknown kinds)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        d: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    cls = EVENT_TYPES.get(str(d.pop("event", "")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError:
        return None


def human(event: Event) -> str | None:
    """The one-line progress text the CLI prints (None: nothing to print)."""
    if isinstance(event, Step):
        mem = f"  gpu {event.gpu_mem_gb:.1f} GB" if event.gpu_mem_gb is not None else ""
        return (f"step {event.step:>6}  loss {event.loss:.4f}  lr {event.lr:.2e}  {event.samples_per_s:6.1f} "
                f"samples/s  ETA {_hms(event.eta_s)}{mem}")
    if isinstance(event, Validation):
        mae = f"  action error {action_error_text(event)}" if event.action_mae is not None else ""
        return f"step {event.step:>6}  val loss {event.val_loss:.4f}{mae}{' (EMA)' if event.ema else ''}"
    if isinstance(event, RunStarted):
        what = "resuming" if event.resumed else "training"
        return (f"{what} {event.run_dir}: steps {event.start_step}->{event.total_steps}, batch {event.global_batch} "
                f"on {event.world_size} x {event.device}, {event.precision}, {event.trainable_params / 1e6:.1f}M of "
                f"{event.total_params / 1e6:.1f}M params trainable"
                + (f", from {base_text(event)}" if event.base else ""))
    if isinstance(event, CheckpointSaved):
        return f"checkpoint {event.path}"
    if isinstance(event, PolicySaved):
        return f"policy folder {event.path}"
    if isinstance(event, Finished):
        return f"finished ({event.reason}) at step {event.step}" + (f": {event.policy_dir}" if event.policy_dir else "")
    if isinstance(event, Failed):
        return f"error ({event.error}): {event.message}"
    if isinstance(event, Status):
        return event.text
    if isinstance(event, Download):
        pct = f"{100 * event.done / event.total:5.1f}%" if event.total else f"{event.done / 1e6:.0f} MB"
        return f"download {event.what}: {pct}"
    return None


def action_error_text(event: Validation) -> str:
    """The validation's action error with its units: '0.172 rad (arm joints), gripper 0.050 (0 closed .. 1 open)'
    where the joints are named (the rig's units: joints in radians, grippers normalized); '0.172 (normalized)'
    without names (synthetic data: the model's normalized action space); '' without an error."""
    if event.action_mae is None:
        return ""
    per, names = event.action_mae_per_joint, event.joint_names
    if not names or len(names) != len(per):
        return f"{event.action_mae:.3f} (normalized)"
    arm = [e for n, e in zip(names, per) if "gripper" not in n]
    grip = [e for n, e in zip(names, per) if "gripper" in n]
    parts = [f"{sum(arm) / len(arm):.3f} rad (arm joints)"] if arm else []
    parts += [f"gripper {sum(grip) / len(grip):.3f} (0 closed .. 1 open)"] if grip else []
    return ", ".join(parts)


def base_text(event: RunStarted) -> str:
    """'random weights (pi0_tiny)' or 'lerobot/pi0_base': what a run's weights started from, for people."""
    if event.base == "random":  # finetune.presets.RANDOM_BASE (no import: this module stays dependency-free)
        return f"random weights ({event.model})" if event.model else "random weights"
    return event.base


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
