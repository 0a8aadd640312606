"""Training-state checkpoints of a run: what an exact resume needs, in RUN/checkpoints/step_NNNNNNNN/.

Not the pi0 weights in the hub layout (that is `finetune.checkpoint`) nor the deployable policy folder
(`finetune.policy_folder`): the trainable weights, the optimizer, the EMA, every rank's RNG states and the step.

    step_00000400/
      trainable.safetensors   trainable weights, keys relative to the policy (hub keys; peft's lora_/base_layer
                              names under LoRA), full (unsharded) tensors
      optimizer.pt            optimizer state keyed by parameter names (torch.distributed.checkpoint's full form)
      ema.safetensors         the EMA's fp32 shadow weights (runs with EMA)
      rng_rank{r}.pt          torch / numpy / python (/ CUDA) RNG states of rank r
      state.json              {"step", "world_size", "config": TrainConfig.resume_key()}: written last

Atomic: everything goes into checkpoints/.tmp-step_N, is fsynced, then renamed; a folder without state.json is not
a checkpoint. The last `keep_last` are kept. The layout is the one runs have had since the trainer was written
(tests/finetune/test_train_state.py resumes such a run). Collective under DDP / FSDP: every rank calls save and
load. No torch import at module level: the GUI lists checkpoints.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from finetune.precision import EMA

CHECKPOINTS = "checkpoints"
STATE = "state.json"  # written last: its presence makes a folder a checkpoint


class SaveError(RuntimeError):
    """A checkpoint could not be written; `error` is "disk_full" or "save_failed", the message names the last
    good checkpoint (left untouched) and the fix."""

    def __init__(self, error: str, message: str, step: int) -> None:
        super().__init__(message)
        self.error, self.step = error, step


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with state.json, written last), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    out = []
    for p in root.glob("step_*") if root.is_dir() else []:
        if p.is_dir() and (p / STATE).is_file() and p.name[5:].isdigit():
            out.append((int(p.name[5:]), p))
    return sorted(out)


def rng_state() -> dict[str, Any]:
    import torch

    s: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def full_states(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Full (unsharded, CPU) trainable weights and optimizer state keyed by parameter names, for plain modules,
    DDP and FSDP2 alike (torch.distributed.checkpoint's state-dict API; a collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    msd, osd = get_state_dict(model, opt, options=opts)
    return dict(msd), osd


def gather_ema(ema: EMA) -> dict[str, Tensor]:
    """The EMA's shadow weights as full CPU tensors (FSDP2 shards gathered: a collective)."""
    out = {}
    for n, t in ema.shadow.items():
        full = t.full_tensor() if hasattr(t, "full_tensor") else t
        out[n] = full.detach().cpu().contiguous()
    return out


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _torch_save(obj: Any, path: Path) -> None:
    """torch.save, with a failed write reported as the OSError it is. torch.save reports a full disk as a
    RuntimeError without the errno ("unexpected pos 576 vs 534", "basic_ios::clear: iostream error"), so the
    "disk full ... resume" message never came and .tmp-step_N stayed behind. After such a RuntimeError the save
    is tried once more through a Python file: then our own write raises the OSError (ENOSPC, EDQUOT, EIO) and
    torch passes it on as the RuntimeError's context (or, the failure having passed, the save succeeds). Without
    an OSError either, a disk with no space left is taken for the cause."""
    import torch

    try:
        torch.save(obj, path)
        return
    except RuntimeError as e:
        first = e
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, f"{cause.strerror or cause} (writing {path.name}: {first})") from first
        if _no_space_left(path.parent):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (writing {path.name}: {first})") from first
        raise first from None


def _no_space_left(folder: Path, slack: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < slack


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None, *,
                    resume_key: Mapping[str, Any], keep_last: int, rank: int = 0, world: int = 1) -> Path:
    """Writes checkpoints/step_N atomically (tmp folder, fsync, rename) and drops all but the last `keep_last`.
    `model` is what the optimizer steps (the loss module, possibly DDP/FSDP-wrapped: keys start with "policy.")."""
    from finetune.checkpoint import save_tensors
    from recorder.durable import fsync_path, fsync_tree

    main = rank == 0
    root = Path(run_dir) / CHECKPOINTS
    final = checkpoint_dir(run_dir, step)
    tmp = root / f".tmp-{final.name}"
    msd, osd = full_states(model, opt)
    ema_sd = gather_ema(ema) if ema is not None else None
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(world)
    try:
        _torch_save(rng_state(), tmp / f"rng_rank{rank}.pt")
        if main:
            save_tensors(tmp / "trainable.safetensors",
                         {k.removeprefix("policy."): v.contiguous() for k, v in msd.items()})
            _torch_save(osd, tmp / "optimizer.pt")
            if ema_sd is not None:
                save_tensors(tmp / "ema.safetensors", ema_sd)
        _barrier(world)
        if main:
            (tmp / STATE).write_text(json.dumps({"step": step, "world_size": world, "config": dict(resume_key)})
                                     + "\n")
            fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_path(root)
            for _, old in list_checkpoints(run_dir)[:-max(keep_last, 1)]:
                shutil.rmtree(old, ignore_errors=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch (e.g. a failed write torch reports without errno)
        full = e.errno in _DISK_FULL if isinstance(e, OSError) else _no_space_left(root)  # before freeing tmp
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        good = list_checkpoints(run_dir)
        last = f"the last good checkpoint is {good[-1][1]}" if good else "no earlier checkpoint exists"
        if full:
            raise SaveError("disk_full", f"disk full while saving the checkpoint of step {step} under {root}; "
                            f"{last} (untouched). Free space (or lower --keep-last) and resume with --resume.",
                            step) from e
        raise SaveError("save_failed", f"saving the checkpoint of step {step} failed ({e}); {last}.", step) from e
    except BaseException:  # interrupted (Ctrl-C): no half checkpoint either
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier(world)
    return final


def load_checkpoint(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None, *,
                    rank: int = 0, world: int = 1) -> int:
    """Restores weights, optimizer, EMA and (same world size only) this rank's RNG states; returns the step."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    ckpt = Path(ckpt)
    state = json.loads((ckpt / STATE).read_text())
    msd = {"policy." + k: v for k, v in load_file(str(ckpt / "trainable.safetensors")).items()}
    osd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False)
    opts = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=False)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd, options=opts)
    if ema is not None and (ckpt / "ema.safetensors").is_file():
        sd = load_file(str(ckpt / "ema.safetensors"))
        for n, t in ema.shadow.items():
            src = sd[n]
            if hasattr(t, "full_tensor"):  # FSDP2: keep our shard of the full tensor
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src.to(t.device), t.device_mesh, t.placements)
            t.copy_(src)
    rng = ckpt / f"rng_rank{rank}.pt"
    if rng.is_file() and int(state.get("world_size", 1)) == world:
        set_rng_state(torch.load(rng, weights_only=False))
    return int(state["step"])


__all__ = ["CHECKPOINTS", "STATE", "SaveError", "checkpoint_dir", "full_states", "gather_ema", "list_checkpoints",
           "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
