"""Export a run's policy folder again from one of its checkpoints: `workbench policy export RUN [--step N]`.

For a run whose export failed (a full disk, out of memory: the checkpoints are kept, see train.export_policy),
one killed before it exported, or one whose policy is older than its last checkpoint. It rebuilds the training
model the way the run built it (train_config.json: base, model, LoRA; the precision the run trained in, from its
metrics.jsonl), fills in the checkpoint's trainable weights one tensor at a time (finetune.train_state's layout;
the optimizer state is not read: Adam's moments would double a full fine-tune's memory), takes the data
description (norm stats, transforms, rig) the run recorded at its start (RUN/data_state/, finetune.run_data; else
rebuilt from the dataset as a resume does), and exports with the trainer's streaming export (the EMA averages
read from the checkpoint file per tensor). Events are training's (Status, PolicySaved, Finished / Failed): to the
callback (the CLI's --json, the Train tab) and appended to the run's metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors import safe_open
from torch import Tensor

from finetune import events as ev
from finetune.hub import HubError
from finetune.model.pi0 import Pi0
from finetune.train import (
    METRICS, TRAIN_CONFIG, Dist, TrainConfig, TrainError, build_data, build_policy, export_policy,
    resolve_base, resolve_precision,
)
from finetune.tokenizer import PromptTokenizer, tokenizer_for_run
from finetune.train_state import list_checkpoints

TRAINABLE_FILE = "trainable.safetensors"  # finetune.train_state.save_checkpoint's names
EMA_FILE = "ema.safetensors"


class _FileTensors(Mapping[str, Tensor]):
    """A safetensors file as a read-on-demand mapping (the EMA shadow: one tensor in memory at a time)."""

    def __init__(self, handle: Any) -> None:
        self._f = handle
        self._keys = set(handle.keys())

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._f.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def export_run(run_dir: Path, step: int | None = None, emit: Callable[[ev.Event], None] | None = None) -> Path:
    """Writes run_dir/policy from checkpoint `step` (None: the last); returns the policy folder. Raises
    TrainError (reported as a Failed event too) with the fix in its message."""
    run_dir = Path(run_dir).expanduser()
    metrics = None
    at = step or 0

    def report(e: ev.Event) -> None:
        if metrics is not None:
            metrics.write(ev.to_json(e) + "\n")
        if emit is not None:
            emit(e)

    try:
        if not (run_dir / TRAIN_CONFIG).is_file():
            raise TrainError("not_a_run", f"{run_dir} is not a training run (no {TRAIN_CONFIG}); pass the folder "
                             "`workbench train --out` wrote (runs/NAME).")
        metrics = open(run_dir / METRICS, "a", buffering=1)
        cfg = TrainConfig.from_json(json.loads((run_dir / TRAIN_CONFIG).read_text()))
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            raise TrainError("no_checkpoint", f"{run_dir} has no complete checkpoint to export from. Continue "
                             f"training with `workbench train --out {run_dir} --resume` (it checkpoints every "
                             "--save-every steps and exports at the end).")
        if step is None:
            at, ckpt = ckpts[-1]
        elif step in dict(ckpts):
            at, ckpt = step, dict(ckpts)[step]
        else:
            raise TrainError("no_checkpoint", f"{run_dir} has no checkpoint of step {step}; it has steps "
                             f"{', '.join(str(s) for s, _ in ckpts)}. Pass one of those to --step, or leave --step "
                             "out for the last.", step)
        device = torch.device("cpu")
        precision = _run_precision(run_dir, cfg, device)
        report(ev.Status(f"exporting the policy of {run_dir.name} from {ckpt.name} ({precision} model on the CPU)"))
        folder, model_config = resolve_base(cfg, report)
        report(ev.Status("building the model"))
        try:
            policy = build_policy(cfg, folder, model_config, precision, device)
        except (MemoryError, torch.OutOfMemoryError) as e:
            raise TrainError("out_of_memory", f"out of memory building the {model_config.name} model to export "
                             f"from ({e}); close other programs and run `workbench policy export {run_dir}` "
                             "again.", at) from e
        _load_trainable(policy, ckpt / TRAINABLE_FILE, at)
        try:  # the run's: a small model's is in the run folder, pi0's in the hub cache since training
            tok_path = tokenizer_for_run(cfg.tokenizer, run_dir, policy.config.vocab_size)
            tokenizer = PromptTokenizer(tok_path, max_len=policy.config.max_token_len)
        except (HubError, ValueError, OSError) as e:  # unavailable offline, or not the model's (a ValueError)
            raise TrainError("tokenizer_unavailable", f"the run's tokenizer: {e}", at) from e
        data = _run_data(run_dir, cfg, policy, tokenizer, report)
        ema_path = ckpt / EMA_FILE
        with (safe_open(str(ema_path), framework="pt") if ema_path.is_file() else contextlib.nullcontext()) as handle:
            shadow = _FileTensors(handle) if handle is not None else None
            out = export_policy(run_dir, policy.eval(), shadow, data, cfg, tok_path, at, Dist(), report,
                                model_config.dtype)
        assert out is not None
        report(ev.Finished(at, "done", str(out)))
        return out
    except TrainError as e:
        report(ev.Failed(e.error, str(e), e.step if e.step is not None else at))
        report(ev.Finished(at, "error"))
        raise
    finally:
        if metrics is not None:
            metrics.close()


def _run_precision(run_dir: Path, cfg: TrainConfig, device: torch.device) -> str:
    """The precision the run trained in (its last RunStarted event), so the rebuilt model stores what training
    stored (a bf16 LoRA base, fp32 trainable weights); without one, the configured precision on the CPU."""
    last = None
    path = run_dir / METRICS
    for line in path.read_text().splitlines() if path.is_file() else []:
        e = ev.parse(line)
        if isinstance(e, ev.RunStarted):
            last = e.precision
    return last or resolve_precision(cfg.precision, device)


@torch.no_grad()
def _load_trainable(policy: Pi0, path: Path, step: int) -> None:
    """The checkpoint's trainable weights into the rebuilt model, one tensor at a time, strictly: every key a
    parameter of the model (under any of its tied names), every trainable parameter present, shapes equal."""
    by_name = dict(policy.named_parameters(remove_duplicate=False))
    filled: set[int] = set()
    with safe_open(str(path), framework="pt") as f:
        unknown = sorted(k for k in f.keys() if k not in by_name)
        if unknown:
            raise TrainError("checkpoint_mismatch", f"{path} has weights this run's model lacks ({unknown[:5]}"
                             f"{' ...' if len(unknown) > 5 else ''}): train_config.json and the checkpoint do not "
                             "belong together (was the run folder edited?).", step)
        for k in f.keys():
            p = by_name[k]
            t = f.get_tensor(k)
            if tuple(t.shape) != tuple(p.shape):
                raise TrainError("checkpoint_mismatch", f"{path}: {k} is {list(t.shape)}, the model's "
                                 f"{list(p.shape)}: train_config.json and the checkpoint do not belong together.",
                                 step)
            p.copy_(t)
            filled.add(id(p))
            del t
    missing = sorted(n for n, p in policy.named_parameters() if p.requires_grad and id(p) not in filled)
    if missing:
        raise TrainError("checkpoint_mismatch", f"{path} lacks trainable weights {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}: the checkpoint is from another configuration.", step)


class _RecordedData:
    """The data description a run recorded when it started (finetune.run_data: RUN/data_state/, the files
    TrainingData.save writes): what the policy folder gets, whatever happened to the dataset since."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, folder: Path) -> None:
        from finetune.run_data import EPISODES_FILE

        for f in sorted(self.folder.iterdir()):
            if f.is_file() and f.name != EPISODES_FILE:
                shutil.copyfile(f, Path(folder) / f.name)


def _run_data(run_dir: Path, cfg: TrainConfig, policy: Pi0, tokenizer: Any, report: Callable[[ev.Event], None]
              ) -> Any:
    """The run's recorded data description, or (a run without one: synthetic data, older runs) the one
    rebuilt from the dataset as a resume would (no image cache, no loader processes: only save() is used)."""
    from finetune.run_data import DatasetChangedError, load_data_state

    try:
        state = load_data_state(run_dir)
    except DatasetChangedError as e:
        state = None
        report(ev.Status(f"note: {e}; rebuilding the data description from the dataset instead"))
    if state is not None:
        report(ev.Status(f"data description (norm stats, transforms, rig): the run's own, {state.folder}"))
        return _RecordedData(state.folder)
    report(ev.Status(f"data description (norm stats, transforms, rig): rebuilt from {cfg.dataset}"))
    light = dataclasses.replace(cfg, num_workers=0, data={**cfg.data, "cache_images": False})
    return build_data(light, policy.config, tokenizer, cfg.batch_size, Dist())


__all__ = ["export_run"]
