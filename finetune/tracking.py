"""Experiment tracking: a run's metrics, configuration and dataset fingerprint to TensorBoard and Weights & Biases.

Off by default: nothing is written or sent unless a run asks for it (`TrainConfig.tracking`, `workbench train
--track tensorboard|wandb`). The trainer's own record stays `metrics.jsonl` (finetune.events); a tracker only
mirrors the events the loop already reports, on rank 0, into the maintained libraries' formats:

    RUN/tensorboard/   event files (torch.utils.tensorboard.SummaryWriter; needs the `tensorboard` package):
                       scalars per step, the configuration as hparams (flattened) and as a JSON text summary
    RUN/wandb/         W&B's run folders (`wandb` package), offline by default: upload later with `wandb sync`;
                       online only with --wandb-mode online (and `wandb login` / WANDB_API_KEY on that machine)
    RUN/tracking.json  the W&B run id, so a resumed run (--resume, also on --host / SLURM: the run folder
                       travels) logs into the same W&B run

Scalars (`scalars`): train/loss, train/lr, train/grad_norm, train/samples_per_s, train/gpu_mem_gb (CUDA) from each
`Step` event; val/loss, val/action_mae and val/action_mae/<joint> from each `Validation` event; the x-axis is the
optimizer step. A resume continues the same TensorBoard folder: events from the steps it repeats (after the
checkpoint it resumes from) are purged from TensorBoard's view (SummaryWriter's purge_step), so the curve has one
value per step. In W&B every value is logged against the metric `train/step` (define_metric), so repeated steps
after a resume are kept rather than dropped as non-monotonic.

The libraries are imported only when a run turns tracking on; a missing one is a `TrackingError` that names the
pip command. A library failing during the run (a full disk under the event files, a W&B service crash) does not
stop training: that tracker is switched off with one warning (metrics.jsonl still has everything).
"""
from __future__ import annotations

import json
import os
import secrets
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from finetune import events as ev

TENSORBOARD = "tensorboard"
WANDB = "wandb"
BACKENDS = (TENSORBOARD, WANDB)
WANDB_MODES = ("offline", "online")
DEFAULT_PROJECT = "aloha-workbench"
TB_DIR = "tensorboard"  # RUN/tensorboard
WANDB_DIR = "wandb"  # RUN/wandb (wandb.init(dir=RUN) makes it)
STATE_FILE = "tracking.json"
STEP_METRIC = "train/step"  # W&B's x-axis
PIP_PACKAGES = {TENSORBOARD: "tensorboard", WANDB: "wandb"}


class TrackingError(RuntimeError):
    """A tracker could not start (a package missing, W&B not logged in, ...); the message says what to do.
    `error` is a stable name: tracking_unavailable (not installed) or tracking_failed."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class TrackingConfig:
    """Which trackers a run writes to (none by default). Stored in train_config.json under "tracking"; not part of
    the resume key (a run may turn tracking on or off when resumed)."""

    backends: tuple[str, ...] = ()  # subset of BACKENDS
    wandb_project: str = DEFAULT_PROJECT
    wandb_mode: str = "offline"  # offline: nothing leaves the machine (`wandb sync` later); online: streamed

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(dict.fromkeys(self.backends)))  # lists from JSON, no repeats
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown tracker {bad[0]!r}: use one of {', '.join(BACKENDS)}")
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {self.wandb_mode!r}: use one of {', '.join(WANDB_MODES)}")
        if not self.wandb_project or "/" in self.wandb_project:
            raise ValueError(f"W&B project name {self.wandb_project!r}: give a plain name (the entity comes from "
                             "`wandb login` or WANDB_ENTITY)")

    @property
    def on(self) -> bool:
        return bool(self.backends)

    def to_json(self) -> dict[str, Any]:
        return {"backends": list(self.backends), "wandb_project": self.wandb_project, "wandb_mode": self.wandb_mode}

    @staticmethod
    def from_json(d: Mapping[str, Any] | None) -> "TrackingConfig":
        d = dict(d or {})
        return TrackingConfig(backends=tuple(d.get("backends", ())),
                              wandb_project=str(d.get("wandb_project", DEFAULT_PROJECT)),
                              wandb_mode=str(d.get("wandb_mode", "offline")))


# ====================================================================================================== what is logged
def scalars(e: ev.Event) -> tuple[int, dict[str, float]] | None:
    """(step, {tag: value}) of a Step or Validation event; None for every other event."""
    if isinstance(e, ev.Step):
        out = {"train/loss": e.loss, "train/lr": e.lr, "train/grad_norm": e.grad_norm,
               "train/samples_per_s": e.samples_per_s}
        if e.gpu_mem_gb is not None:
            out["train/gpu_mem_gb"] = e.gpu_mem_gb
        return e.step, out
    if isinstance(e, ev.Validation):
        out = {"val/loss": e.val_loss}
        if e.action_mae is not None:
            out["val/action_mae"] = e.action_mae
        names = e.joint_names if len(e.joint_names) == len(e.action_mae_per_joint) else \
            [str(i) for i in range(len(e.action_mae_per_joint))]
        for name, v in zip(names, e.action_mae_per_joint):
            out[f"val/action_mae/{name}"] = v
        return e.step, out
    return None


def run_facts(started: ev.RunStarted, fingerprint: str) -> dict[str, Any]:
    """What the trainer knows at the start beyond train_config.json: the dataset fingerprint and the set-up."""
    return {"dataset_fingerprint": fingerprint, "world_size": started.world_size, "device": started.device,
            "precision_resolved": started.precision, "trainable_params": started.trainable_params,
            "total_params": started.total_params, "start_step": started.start_step, "resumed": started.resumed,
            "base_path": started.base_path, "model_built": started.model}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested config -> flat {"optim.peak_lr": 2.5e-05, ...} of the types TensorBoard's hparams take (lists as
    JSON text, None as "None")."""
    out: dict[str, bool | int | float | str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        elif v is None:
            out[key] = "None"
        else:
            out[key] = json.dumps(v, default=str)
    return out


# ====================================================================================================== trackers
def _import(backend: str) -> Any:
    """The library of `backend`, imported now (only ever when a run turns it on)."""
    try:
        if backend == TENSORBOARD:
            import tensorboard  # noqa: F401 - torch.utils.tensorboard's own error does not name the pip package
            from torch.utils import tensorboard as tb
            return tb
        import wandb
        return wandb
    except ImportError as e:
        pkg = PIP_PACKAGES[backend]
        raise TrackingError("tracking_unavailable", (
            f"--track {backend} needs the `{pkg}` package, which this Python ({sys.executable}) cannot import "
            f"({e}). Fix: `{sys.executable} -m pip install {pkg}` (or `pip install -e '.[tracking]'` in the "
            f"workbench checkout; on --host / SLURM: on that machine), or train without --track {backend}.")
        ) from e


def require(cfg: TrackingConfig) -> None:
    """Imports every library `cfg` needs, or raises TrackingError naming the pip command."""
    for b in cfg.backends:
        _import(b)


class _TensorBoard:
    def __init__(self, run_dir: Path) -> None:
        self.tb = _import(TENSORBOARD)
        self.folder = run_dir / TB_DIR
        self.writer: Any = None

    def start(self, config: Mapping[str, Any], facts: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        start = int(facts["start_step"])
        # purge_step: what an earlier session logged for the steps after the checkpoint this one starts from
        # (it trains and logs those steps again) is hidden, so every step keeps one value
        self.writer = self.tb.SummaryWriter(str(self.folder), purge_step=start + 1, flush_secs=30)
        flat = flatten({**config, **facts})
        metrics = {k: 0.0 for k in ("train/loss", "val/loss", "val/action_mae")}  # names only: declares them
        for summary in hparams(flat, metrics):
            self.writer.file_writer.add_summary(summary)
        text = json.dumps({**config, **facts}, indent=2, default=str)
        self.writer.add_text("config", "```\n" + text + "\n```", start)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, exit_code: int) -> None:
        if self.writer is not None:
            self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, cfg: TrackingConfig, notify: Callable[[str], None]) -> None:
        wandb = _import(WANDB)
        self.run_dir = run_dir
        state = read_state(run_dir)
        run_id = state.get("wandb_id") if state.get("wandb_project") == cfg.wandb_project else None
        run_id = run_id or new_run_id()
        write_state(run_dir, {**state, "wandb_id": run_id, "wandb_project": cfg.wandb_project})
        try:
            # console off: stdout is the event stream (--json, the Train tab, the SSH relay) and stays untouched
            self.run = wandb.init(project=cfg.wandb_project, name=run_dir.name, id=run_id, resume="allow",
                                  dir=str(run_dir), mode=cfg.wandb_mode, job_type="train",
                                  settings=wandb.Settings(console="off"))
        except Exception as e:  # noqa: BLE001 - wandb raises its own kinds (UsageError, CommError, ...)
            fix = ("`wandb login` (or set WANDB_API_KEY) on the machine that trains, or use --wandb-mode offline "
                   "and upload later with `wandb sync`") if cfg.wandb_mode == "online" else "check the message"
            raise TrackingError("tracking_failed", f"W&B could not start a {cfg.wandb_mode} run in {run_dir}: "
                                f"{e}. Fix: {fix}, or train without --track wandb.") from e
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        if cfg.wandb_mode == "offline":
            notify(f"W&B offline run {run_id} in {run_dir / WANDB_DIR}; upload it later with `wandb sync --id "
                   f"{run_id} {run_dir / WANDB_DIR}/offline-run-*-{run_id}`")
        else:
            notify(f"W&B run {getattr(self.run, 'url', None) or run_id}")

    def start(self, config: Mapping[str, Any], facts: Mapping[str, Any]) -> None:
        self.run.config.update({**config, **facts}, allow_val_change=True)  # a resume may change steps etc.

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log({STEP_METRIC: step, **values})

    def flush(self) -> None:
        pass

    def close(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


def new_run_id() -> str:
    """8 characters of [a-z0-9], the form W&B's own run ids take."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def read_state(run_dir: Path) -> dict[str, Any]:
    """RUN/tracking.json ({} when absent or unreadable: a new W&B id is made)."""
    try:
        d = json.loads((Path(run_dir) / STATE_FILE).read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    path = Path(run_dir) / STATE_FILE
    tmp = path.with_name(f".tmp-{STATE_FILE}")
    tmp.write_text(json.dumps(dict(state), indent=1) + "\n")
    os.replace(tmp, path)


class Tracker:
    """The run's trackers behind one interface: `describe` the run (its configuration and dataset fingerprint),
    then `log` every event the trainer reports (the RunStarted event writes the description, Step / Validation
    events the scalars), `close` at the end. A tracker that fails mid-run is dropped with one warning."""

    def __init__(self, sinks: dict[str, Any], warn: Callable[[str], None]) -> None:
        self.sinks = sinks
        self._warn = warn
        self._config: dict[str, Any] = {}
        self._fingerprint = ""
        self.exit_code = 1  # until a Finished event says otherwise (an unexpected exception: failed)

    def describe(self, config: Mapping[str, Any], fingerprint: str) -> None:
        """What the next RunStarted event is logged with: TrainConfig.to_json() and the dataset fingerprint."""
        self._config, self._fingerprint = dict(config), fingerprint

    def log(self, e: ev.Event) -> None:
        if isinstance(e, ev.RunStarted):
            self._each("start", self._config, run_facts(e, self._fingerprint))
        if isinstance(e, ev.Finished):
            self.exit_code = 1 if e.reason == "error" else 0  # cancelled: checkpointed, resumable
        if isinstance(e, ev.CheckpointSaved):
            self._each("flush")  # what led to a checkpoint is on disk with it
        got = scalars(e)
        if got is not None:
            self._each("log", *got)

    def close(self) -> None:
        self._each("close", self.exit_code)
        self.sinks = {}

    def _each(self, method: str, *args: Any) -> None:
        for name, sink in list(self.sinks.items()):
            try:
                getattr(sink, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker must not end a training run
                del self.sinks[name]
                self._warn(f"warning: {name} tracking stopped ({type(e).__name__}: {e}); training goes on and "
                           "metrics.jsonl keeps every value")


def open_tracker(cfg: TrackingConfig, run_dir: str | Path, notify: Callable[[str], None]) -> Tracker | None:
    """The trackers `cfg` asks for (None when off). Imports the libraries and starts W&B now, before the model
    is built, so a missing package or a missing login is said in seconds; raises TrackingError."""
    if not cfg.on:
        return None
    run_dir = Path(run_dir)
    sinks: dict[str, Any] = {}
    require(cfg)
    try:
        for b in cfg.backends:
            sinks[b] = _TensorBoard(run_dir) if b == TENSORBOARD else _WandB(run_dir, cfg, notify)
    except BaseException:
        for s in sinks.values():
            s.close(1)
        raise
    return Tracker(sinks, notify)


__all__ = ["BACKENDS", "TrackingConfig", "TrackingError", "Tracker", "WANDB_MODES", "open_tracker", "require",
           "scalars"]
