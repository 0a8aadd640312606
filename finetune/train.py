"""Post-training pi0: one readable loop (nanoGPT-style), on one device or many through `torchrun`.

    python -m finetune.train ...                     # normally through `workbench train` (workbench/cli_train.py)
    torchrun --nproc-per-node 4 -m workbench.cli train ...

What the loop guarantees, and where:
  * small updates are not lost in bf16 (`precision.py`: fp32 master weights + autocast, or stochastic rounding);
  * exact resume: trainable weights, optimizer, EMA, RNG states and the step are checkpointed; the data position
    is the step (the data iterator restarts at any global step) and each step's flow-matching noise and time are
    drawn from a generator seeded by (seed, step), so a resumed run repeats an uninterrupted one;
  * atomic checkpoints: written into a temporary folder, fsynced, renamed; a crash or a full disk while saving
    leaves the previous checkpoint as it was; the last `keep_last` are kept;
  * NaN/inf loss or gradient: stops before the optimizer step (weights stay finite), names the step and batch,
    keeps the last good checkpoint;
  * SIGINT / SIGTERM: finishes the current step, writes a checkpoint and the policy folder, exits 130;
  * the policy export streams the training model's tensors (no second model: `export_policy`); a failed one
    (full disk, out of memory) keeps the checkpoints and is redone by `workbench policy export RUN`
    (finetune.run_export).

Run folder (--out): train_config.json, metrics.jsonl (typed events, `finetune.events`), checkpoints/step_*/
(`finetune.train_state`), policy/ (the deployable policy folder, `finetune.policy_folder`).

Around the loop: the named set-ups are `finetune.presets` (`TrainConfig.from_preset`), the data
`finetune.data.open_training_data` (synthetic data: `finetune.synthetic_data`), the tokenizer
`finetune.tokenizer.tokenizer_for_run`, base downloads `finetune.hub`, and launching (torchrun, SSH)
`finetune.launch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from finetune import events as ev
from finetune.model.pi0 import Observation, Pi0
from finetune.model_config import Pi0Config
from finetune.precision import EMA, OptimConfig, autocast, build_optimizer, cosine_lr, model_dtype_for, set_lr
from finetune.presets import PI0_BASE, RANDOM_BASE
from finetune.tracking import TrackingConfig, TrackingError
from finetune.train_state import SaveError, list_checkpoints, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from finetune.presets import TrainPreset

POLICY = "policy"
METRICS = "metrics.jsonl"
TRAIN_CONFIG = "train_config.json"


# ====================================================================================================== config
@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored as train_config.json (a resume must match it). Normally made from a
    named preset (`from_preset`, finetune.presets), which is where the per-model values live."""

    dataset: str  # dataset folder, LeRobot folder / hub dataset id, or "synthetic" (benchmarks, tests)
    out: str
    base: str  # hub id, local pi0 folder, an earlier run or policy folder, or "random"
    model: str  # Pi0Config variant (the base's config.json wins when it has one)
    steps: int
    batch_size: int  # global (split over the ranks)
    revision: str | None = None
    lora: bool = False
    optim: OptimConfig = OptimConfig()
    precision: str = "auto"  # auto: bf16-amp on CUDA, fp32 on the CPU
    gradient_checkpointing: bool = True
    attention: str = "sdpa"
    compile: bool = False
    fsdp: bool = False
    seed: int = 0
    num_workers: int = 2
    log_every: int = 10
    val_every: int = 1000
    save_every: int = 1000
    keep_last: int = 2
    val_batches: int = 4
    device: str = "auto"
    tokenizer: str | None = None  # None: lerobot/pi0's tokenizer.model (tiny: trained into the run folder)
    # training-time real-time chunking (Black et al. 2025, arXiv 2512.05964): each sample's first d ~ U{0..N}
    # actions are given clean (flow time 0) and left out of the loss; 0 = off. For policies run with --mode rtc.
    rtc_max_delay: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # finetune.data.DataConfig fields (filters, prompt, ...)
    # --resume on a dataset that changed since the run started: go on with the run's own split and normalization
    # statistics (finetune.run_data) instead of refusing. This invocation's choice: not stored in train_config.json
    keep_run_data: bool = False
    # experiment tracking (finetune.tracking: TensorBoard / W&B), off by default; not in the resume key
    tracking: TrackingConfig = TrackingConfig()

    @staticmethod
    def from_preset(preset: "TrainPreset", *, dataset: str, out: str, data: Mapping[str, Any] | None = None,
                    **fields: Any) -> "TrainConfig":
        """A run of `preset` (finetune.presets; override its values with preset.replace(...) first). `data`:
        DataConfig fields; `fields`: the TrainConfig fields no preset sets (seed, workers, revision, ...)."""
        warmup = preset.warmup
        optim = OptimConfig(peak_lr=preset.lr, end_lr=preset.end_lr, warmup_steps=warmup,
                            decay_steps=max(preset.steps, warmup + 1), ema_decay=preset.ema_decay)
        data = dict(data or {})
        if preset.cache_images:  # absent when off: runs from before the option still resume
            data["cache_images"] = True
        return TrainConfig(dataset=dataset, out=out, base=preset.base, model=preset.model, lora=preset.lora,
                           steps=preset.steps, batch_size=preset.batch_size, optim=optim, precision=preset.precision,
                           gradient_checkpointing=preset.gradient_checkpointing, val_every=preset.val_every,
                           save_every=preset.save_every, device=preset.device, data=data, **fields)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        d.pop("keep_run_data")
        d["tracking"] = self.tracking.to_json()
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "TrainConfig":
        kw = dict(d)
        o = dict(kw.pop("optim", {}))
        if "betas" in o:
            o["betas"] = tuple(o["betas"])
        tracking = TrackingConfig.from_json(kw.pop("tracking", None))  # absent: a run from before tracking
        return TrainConfig(optim=OptimConfig(**o), tracking=tracking, **kw)

    def resume_key(self) -> dict[str, Any]:
        """What must not change between a run and its resume (steps, intervals and workers may)."""
        d = self.to_json()
        for k in ("steps", "log_every", "val_every", "save_every", "keep_last", "num_workers", "device", "out",
                  "val_batches", "tracking"):
            d.pop(k)
        d["optim"].pop("decay_steps", None)
        return d


class TrainError(RuntimeError):
    """A failure the user can act on; `error` is a stable name, the message carries the fix."""

    def __init__(self, error: str, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.error, self.step = error, step


# ====================================================================================================== runtime
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) -> a process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return d


def pick_device(want: str, d: Dist) -> torch.device:
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError("no_cuda", "no CUDA device is visible (torch.cuda.is_available() is False; torch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda}). Check `nvidia-smi` and that the "
                             "CUDA build of torch is installed, or train on the CPU with a tiny config: "
                             "`workbench train --config tiny --device cpu ...` (pi0 itself needs a GPU).")
        return torch.device("cuda", d.local_rank if want == "cuda" else int(want.split(":")[1]))
    return torch.device(want)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16-amp" if device.type == "cuda" else "fp32"
    return precision


def step_noise(seed: int, step: int, rank: int, local_batch: int, world: int, horizon: int, dim: int
               ) -> tuple[Tensor, Tensor]:
    """This rank's share of the global batch's flow noise [b, H, A] and time [b] at `step`: drawn for the whole
    global batch from one generator seeded by (seed, step), then sliced, so W ranks see exactly the noise one
    process at the combined batch would, and a resumed run draws what the uninterrupted one did."""
    from finetune.model.pi0 import sample_flow_time

    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    n = local_batch * world
    noise = torch.randn(n, horizon, dim, generator=g)
    t = sample_flow_time(n, "cpu", generator=g)
    sl = slice(rank * local_batch, (rank + 1) * local_batch)
    return noise[sl], t[sl]


def step_delays(seed: int, step: int, rank: int, local_batch: int, world: int, max_delay: int) -> Tensor:
    """Training-time RTC: this rank's share of the global batch's simulated inference delays [b] int64, uniform in
    [0, max_delay], from their own generator seeded by (seed, step) (the noise and time streams are unchanged)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step + 0x5EED_0000_0000) % (2 ** 63))
    d = torch.randint(0, max_delay + 1, (local_batch * world,), generator=g)
    return d[rank * local_batch:(rank + 1) * local_batch]


class LossModule(nn.Module):
    """The module DDP / FSDP wrap: forward = pi0's flow-matching loss (the wrappers hook forward, not methods)."""

    def __init__(self, policy: Pi0) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Observation, actions: Tensor, action_is_pad: Tensor | None, noise: Tensor,
                time: Tensor, delay: Tensor | None = None) -> Tensor:
        return self.policy.compute_loss(obs, actions, noise, time, action_is_pad=action_is_pad, delay=delay)


# ====================================================================================================== data
def build_data(cfg: TrainConfig, model_config: Pi0Config, tokenizer: Any, local_batch: int, d: Dist) -> Any:
    """This rank's data (finetune.data.open_training_data); dataset problems become TrainErrors with the fix."""
    from finetune.data import open_training_data
    from finetune.episode_set import NoEpisodesError

    try:
        return open_training_data(cfg.dataset, cfg.data, model_config, tokenizer, batch_size=local_batch,
                                  num_workers=cfg.num_workers, seed=cfg.seed, rank=d.rank, world_size=d.world)
    except (ValueError, FileNotFoundError) as e:  # finetune.episodes.EpisodeDataError is a ValueError
        text = str(e)
        if isinstance(e, NoEpisodesError):
            raise TrainError("no_episodes", f"{text}\n(Episodes in the trash are never used: restore them with "
                             "`workbench episodes DIR restore NAME`.)") from e
        # different cameras or joint counts across episodes, unreadable files, ...: the message names the fix
        raise TrainError("bad_dataset", text) from e


# ====================================================================================================== model
def resolve_base(cfg: TrainConfig, emit: Callable[[ev.Event], None]) -> tuple[Path | None, Pi0Config]:
    """-> (weights folder or None for random init, model config). An earlier run means its policy folder. The
    config's dtype is the inference/export one (checkpoint.inference_dtype: bf16 for pi0 even where the base's
    config.json says float32); training builds in its precision policy's dtypes (build_policy) anyway.

    A base of the other kind than `cfg.model` (a pi0 checkpoint for a pi0.5 preset, or the reverse) is refused
    before the model is built, by its config.json and its weights' keys; a hub base by its config.json before the
    weights are downloaded."""
    from finetune.checkpoint import (CheckpointError, CheckpointKindError, check_folder_kind, inference_dtype,
                                     read_config)
    from finetune.hub import CONFIG_FILE, HubError, download_folder, resolve_file

    if cfg.base == RANDOM_BASE:
        mc = Pi0Config.variant(cfg.model)
        return None, mc.replace(dtype=inference_dtype(mc))
    try:
        wanted: str | None = Pi0Config.variant(cfg.model).kind
    except ValueError:  # a model name that is not a variant: the base's config.json decides alone
        wanted = None

    def refuse_kind(folder: Path, mc: Pi0Config) -> None:
        if wanted is None:
            return
        from finetune.checkpoint import BASE_REPOS, KIND_NAMES
        from finetune.presets import names_for_kind

        other = "pi05" if wanted == "pi0" else "pi0"
        fix = (f"this is a {KIND_NAMES[other]} checkpoint: train it with a {KIND_NAMES[other]} preset (--config "
               f"{' / '.join(names_for_kind(other))}), or give a {KIND_NAMES[wanted]} base for model "
               f"{cfg.model!r}, such as {BASE_REPOS[wanted]} (--base {BASE_REPOS[wanted]}).")
        try:
            check_folder_kind(folder, mc, wanted, f"base checkpoint {cfg.base}", fix)
        except CheckpointKindError as e:
            raise TrainError("base_kind_mismatch", str(e)) from e

    p = Path(cfg.base).expanduser()
    if (p / TRAIN_CONFIG).is_file():  # an earlier run: continue from its policy
        if not (p / POLICY / "model.safetensors").is_file():
            raise TrainError("bad_base", f"run {p} has no finished policy folder yet ({p / POLICY}); resume it "
                             f"with `workbench train --out {p} --resume` instead, or wait for it to finish.")
        p = p / POLICY
    if p.is_dir():
        folder = p
    else:
        if wanted is not None:  # its config.json first (a few KB): the other kind is refused before GBs of weights
            try:
                snapshot = resolve_file(cfg.base, CONFIG_FILE, revision=cfg.revision).parent
                early = read_config(snapshot)
            except (HubError, CheckpointError, ValueError, KeyError, TypeError):
                early = None  # the download below (or reading its config) says what is wrong
            if early is not None:
                refuse_kind(snapshot, early)  # its config (the weights' keys too if already cached)
        emit(ev.Status(f"fetching base checkpoint {cfg.base} (cached after the first download)"))
        try:
            folder = download_folder(cfg.base, revision=cfg.revision,
                                     on_progress=lambda what, done, total: emit(ev.Download(what, done, total)))
        except HubError as e:
            raise TrainError("base_unavailable", str(e)) from e
    try:
        mc = read_config(folder)
    except (CheckpointError, ValueError, KeyError, TypeError) as e:
        raise TrainError("not_pi0", f"base checkpoint {cfg.base} is not a pi0 checkpoint: {e}\nFix: pass --base "
                         f"{PI0_BASE}, a folder with a pi0 config.json + model.safetensors, or one of our "
                         "runs / policy folders.") from e
    refuse_kind(folder, mc)
    return folder, mc.replace(dtype=inference_dtype(mc))


def build_policy(cfg: TrainConfig, folder: Path | None, model_config: Pi0Config, precision: str,
                 device: torch.device) -> Pi0:
    """Base weights (or random ones) in the storage dtype of the precision policy, LoRA applied, switches set."""
    from finetune.checkpoint import CheckpointError, build_model, load_weights_, random_init_

    # LoRA: the frozen base in bf16 when computing in bf16 (openpi), trainable parts fp32 (cast below)
    dtype = "bfloat16" if (cfg.lora and precision != "fp32") else model_dtype_for(precision)
    mc = model_config.replace(dtype=dtype, attention=cfg.attention)
    model = build_model(mc, "meta")
    if folder is None:
        random_init_(model, device, seed=cfg.seed)
    else:
        try:
            load_weights_(model, folder, device=device, source=cfg.base)
        except CheckpointError as e:
            raise TrainError("not_pi0", f"base checkpoint {cfg.base} does not fit pi0 variant {mc.name!r}: {e}\n"
                             f"Fix: use a pi0 checkpoint ({PI0_BASE}) or the matching --config.") from e
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    if cfg.lora:
        from finetune.lora import apply_lora

        apply_lora(model)
    from finetune.model.gemma import unused_in_training
    from finetune.model.pi0 import param_dtype

    unused = unused_in_training(mc)
    for name, p in model.named_parameters():
        if name.startswith(unused):
            p.requires_grad_(False)  # never reached by the loss (see unused_in_training)
    if precision == "bf16-amp":  # after freezing: fp32 master weights for what trains, bf16 storage for the rest
        for name, p in model.named_parameters():
            want = torch.float32 if p.requires_grad else param_dtype(name, torch.bfloat16)
            if p.dtype != want:
                p.data = p.data.to(want)  # the Parameter object stays: ties survive
    return model.train()


def wrap(loss_module: LossModule, cfg: TrainConfig, d: Dist, device: torch.device, precision: str) -> nn.Module:
    """DDP, or FSDP2 (`fully_shard` per transformer layer, then the root) for full fine-tuning on small cards."""
    if d.world <= 1:
        return loss_module
    if cfg.fsdp:
        if cfg.lora:
            raise TrainError("bad_config", "FSDP is for full fine-tuning; LoRA fits one card: use DDP (drop --fsdp)")
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if precision == "bf16-amp" else MixedPrecisionPolicy()
        pwe = loss_module.policy.paligemma_with_expert
        layers = [*pwe.paligemma.model.vision_tower.vision_model.encoder.layers,
                  *pwe.paligemma.model.language_model.layers, *pwe.gemma_expert.model.layers]
        for layer in layers:
            fully_shard(layer, mp_policy=mp)
        for layer in [*pwe.paligemma.model.language_model.layers, *pwe.gemma_expert.model.layers]:
            # the shared attention calls each Gemma layer's halves (qkv, finish), not its forward: let those
            # methods gather and release the shard like a forward would
            register_fsdp_forward_method(layer, "qkv")
            register_fsdp_forward_method(layer, "finish")
        fully_shard(loss_module, mp_policy=mp)
        return loss_module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(loss_module, device_ids=[device.index] if device.type == "cuda" else None)


# ====================================================================================================== checkpoints
def _save(run_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None,
          cfg: TrainConfig, d: Dist) -> Path:
    try:
        return save_checkpoint(run_dir, step, model, opt, ema, resume_key=cfg.resume_key(), keep_last=cfg.keep_last,
                               rank=d.rank, world=d.world)
    except SaveError as e:
        raise TrainError(e.error, str(e), e.step) from e


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


# ====================================================================================================== validation
@torch.no_grad()
def validate(policy: Pi0, data: Any, cfg: TrainConfig, precision: str, device: torch.device, step: int,
             tokenizer: Any, d: Dist) -> ev.Validation | None:
    """Held-out flow-matching loss (fixed noise per batch) and the mean absolute error of sampled chunks against
    the recorded actions in rig units, per joint, over the chunk steps inside the episode."""
    policy.eval()
    try:
        transforms = data.transforms(tokenizer) if hasattr(data, "transforms") else None
        loss_sum = torch.zeros((), dtype=torch.float64)
        n_batches = 0
        err_sum: Tensor | None = None
        err_n: Tensor | None = None
        for i, batch in enumerate(data.val_batches()):
            if i >= cfg.val_batches:
                break
            obs = batch["observation"].to(device)
            actions = batch["actions"].to(device)
            pad = batch["action_is_pad"].to(device)
            b = actions.shape[0]
            g = torch.Generator().manual_seed(cfg.seed + 17 + i)
            noise = torch.randn(actions.shape, generator=g).to(device)
            t = torch.rand(b, generator=g).to(device) * 0.999 + 0.001
            with autocast(precision, device):
                loss_sum += float(policy.compute_loss(obs, actions, noise, t, action_is_pad=pad))
                sampled = policy.sample_actions(obs, noise=torch.randn(actions.shape, generator=g).to(device))
            n_batches += 1
            if transforms is not None and "actions_rig" in batch:
                pred = torch.as_tensor(transforms.actions(sampled.float().cpu(), batch["state_rig"]))
                truth = batch["actions_rig"].float()
            else:  # synthetic: model space, the first 14 dims
                pred, truth = sampled.float().cpu()[..., :14], actions.float().cpu()[..., :14]
            valid = (~pad.cpu())[..., None].float()
            e = ((pred - truth).abs() * valid).sum(dim=(0, 1)).double()
            c = valid.sum(dim=(0, 1)).double().expand_as(e)
            err_sum = e if err_sum is None else err_sum + e
            err_n = c if err_n is None else err_n + c
        totals = torch.tensor([loss_sum.item(), float(n_batches)], dtype=torch.float64)
        if d.world > 1:
            dist.all_reduce(totals)
            if err_sum is not None:
                dist.all_reduce(err_sum)
                dist.all_reduce(err_n)
        if totals[1] == 0:
            return None
        per_joint = (err_sum / err_n.clamp(min=1)).tolist() if err_sum is not None else []
        names = list(getattr(getattr(data, "rig", None), "joint_names", []) or [])
        return ev.Validation(step=step, val_loss=float(totals[0] / totals[1]),
                             action_mae=float(np.mean(per_joint)) if per_joint else None,
                             action_mae_per_joint=[float(x) for x in per_joint], joint_names=names)
    finally:
        policy.train()


# ====================================================================================================== the loop
class _Stop:
    """SIGINT/SIGTERM -> finish the step, checkpoint, stop. A second SIGINT (Ctrl-C again) is left to the default
    handler; a repeated SIGTERM is not: under a scheduler it comes more than once (SLURM signals every process of
    the job and torchrun forwards the same signal again), and SIGKILL is the scheduler's way to force. After a
    SIGTERM stop, repeats stay ignored while the policy folder is written and the process exits."""

    def __init__(self) -> None:
        self.requested = False
        self._terminated = False  # the stop came from SIGTERM
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (tests)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if signum == signal.SIGTERM:
            self._terminated = True
        else:
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def __exit__(self, *a: Any) -> None:
        for s, h in self._old.items():
            if not (s == signal.SIGTERM and self._terminated):
                signal.signal(s, h)


def _oom_message(device: torch.device, cfg: TrainConfig, precision: str) -> str:
    """What ran out, the memory model's estimate for this set-up (finetune.memory_model) and what to change."""
    from finetune import memory_model

    if device.type == "cuda":
        dev = memory_model.DeviceMemory("cuda", torch.cuda.get_device_name(device),
                                        int(torch.cuda.get_device_properties(device).total_memory))
    else:
        dev = memory_model.cpu_memory()
    world = dist.get_world_size() if dist.is_initialized() else 1
    ema = cfg.optim.ema_decay is not None
    kw = dict(lora=cfg.lora, precision=precision, batch=max(cfg.batch_size // world, 1),
              grad_ckpt=cfg.gradient_checkpointing)
    what = (f"out of {'GPU' if dev.kind == 'cuda' else 'CPU'} memory on {dev.label} ({dev.total / 2 ** 30:.0f} GiB"
            f"{'' if dev.kind == 'cuda' else ' available now'}) at batch {kw['batch']} per process "
            f"({'LoRA' if cfg.lora else 'full fine-tune'}, {precision}, gradient checkpointing "
            f"{'on' if cfg.gradient_checkpointing else 'off'}).")
    try:
        mc = Pi0Config.variant(cfg.model)
    except ValueError:
        return what + " Fix: --lora, a smaller --batch, --grad-ckpt, --precision bf16-sr, or --gpus N --fsdp."
    est = memory_model.estimate(mc, **kw, device_kind=dev.kind, ema=ema, ddp=world > 1 and not cfg.fsdp)
    tips = memory_model.advice(mc, **kw, capacity=dev.total, device_kind=dev.kind, ema=ema)
    needs = f" The memory model puts this run at ~{est.total / 2 ** 30:.1f} GB ({est.describe()})"
    if est.total <= dev.total:
        why = (f"{needs}, within the {dev.total / 2 ** 30:.0f} GiB: something else holds memory there (other "
               "processes: `nvidia-smi`), or the estimate is low for this set-up.")
    else:
        why = needs + "."
    fix = (" Fix: " + ", or ".join(tips) + ", or several GPUs with --gpus N --fsdp.") if tips else \
        " Fix: several GPUs with --gpus N --fsdp, or a bigger card."
    return what + why + fix


def train(cfg: TrainConfig, emit: Callable[[ev.Event], None] | None = None, resume: bool = False) -> Path | None:
    """Runs (or resumes) a training run; returns the policy folder. Every rank calls it (torchrun)."""
    t_setup = time.monotonic()
    run_dir = Path(cfg.out).expanduser()
    device = pick_device(cfg.device, Dist(local_rank=int(os.environ.get("LOCAL_RANK", "0"))))
    d = init_distributed(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = resolve_precision(cfg.precision, device)
    metrics = None
    tracker = None  # finetune.tracking.Tracker on rank 0 when cfg.tracking is on: mirrors the reported events
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = open(run_dir / METRICS, "a", buffering=1)

    def report(e: ev.Event) -> None:
        if d.main:
            assert metrics is not None
            metrics.write(ev.to_json(e) + "\n")
            if tracker is not None:
                tracker.log(e)
            if emit is not None:
                emit(e)

    step = 0
    try:
        existing = list_checkpoints(run_dir)
        if existing and not resume:
            raise TrainError("run_exists", f"{run_dir} already has checkpoints (last: step {existing[-1][0]}). Pass "
                             "--resume to continue it, or choose another --out.")
        if resume and (run_dir / TRAIN_CONFIG).is_file():
            old = TrainConfig.from_json(json.loads((run_dir / TRAIN_CONFIG).read_text()))
            if old.resume_key() != cfg.resume_key():
                diff = sorted(k for k in cfg.resume_key() if old.resume_key().get(k) != cfg.resume_key().get(k))
                raise TrainError("resume_mismatch", f"--resume with settings that differ from the run's "
                                 f"({', '.join(diff)}); use the original ones or a new --out.")
        from finetune.run_data import DatasetChangedError, record_data_state, resume_data

        try:  # the dataset must still be what the run recorded at its start (finetune.run_data)
            data_plan = resume_data(run_dir, cfg.dataset, cfg.data, resuming=resume and bool(existing),
                                    keep=cfg.keep_run_data)
        except DatasetChangedError as e:
            raise TrainError("dataset_changed", str(e)) from e
        for note in data_plan.notes:
            report(ev.Status(note))
        if d.main:
            (run_dir / TRAIN_CONFIG).write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
        if d.main and cfg.tracking.on:  # before the model is built: a missing package or W&B login said in seconds
            from finetune.tracking import open_tracker

            try:
                tracker = open_tracker(cfg.tracking, run_dir, lambda text: report(ev.Status(text)))
            except TrackingError as e:
                raise TrainError(e.error, str(e)) from e
        if data_plan.data is not None:  # --keep-run-data: the run's own split and statistics (not in train_config)
            cfg = dataclasses.replace(cfg, data=data_plan.data)
        torch.manual_seed(cfg.seed + d.rank)
        np.random.seed(cfg.seed + d.rank)
        random.seed(cfg.seed + d.rank)

        folder, model_config = resolve_base(cfg, report)
        from finetune.tokenizer import PromptTokenizer, TokenizerMismatch, TokenizerUnavailable, tokenizer_for_run

        # the tokenizer before the model: a missing or wrong file is said before minutes of building 3.5 B weights,
        # and as a run failure (TrainError) the CLI and the Train tab show, not a traceback
        try:
            if d.main:  # rank 0 first: a small model's tokenizer is trained into the run folder once
                tok_path = tokenizer_for_run(cfg.tokenizer, run_dir, model_config.vocab_size)
            _barrier(d)
            if not d.main:
                tok_path = tokenizer_for_run(cfg.tokenizer, run_dir, model_config.vocab_size)
        except (TokenizerMismatch, TokenizerUnavailable) as e:
            raise TrainError("tokenizer", str(e)) from e
        report(ev.Status("building the model"))
        try:
            policy = build_policy(cfg, folder, model_config, precision, device)
        except torch.OutOfMemoryError as e:
            raise TrainError("out_of_memory", _oom_message(device, cfg, precision)) from e

        tokenizer = PromptTokenizer(tok_path, max_len=policy.config.max_token_len)
        if cfg.batch_size % d.world:
            raise TrainError("bad_config", f"--batch {cfg.batch_size} is not divisible by {d.world} processes")
        if not (0 <= cfg.rtc_max_delay < policy.config.action_horizon):
            raise TrainError("bad_config", f"--rtc-max-delay {cfg.rtc_max_delay} must be in [0, "
                             f"{policy.config.action_horizon - 1}] (below the chunk horizon)")
        local_b = cfg.batch_size // d.world
        report(ev.Status(f"loading data from {cfg.dataset}"))
        data = build_data(cfg, policy.config, tokenizer, local_b, d)

        loss_module = LossModule(policy)
        model = wrap(loss_module, cfg, d, device, precision)
        named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        opt = build_optimizer([p for _, p in named], cfg.optim, precision, device, seed=cfg.seed + d.rank)
        ema = EMA(named, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
        forward: Callable[..., Tensor] = model
        if cfg.compile:
            forward = torch.compile(model)

        resumed = False
        if resume and list_checkpoints(run_dir):
            last_step, last = list_checkpoints(run_dir)[-1]
            report(ev.Status(f"resuming from {last}"))
            step = load_checkpoint(last, model, opt, ema, rank=d.rank, world=d.world)
            resumed = True
        if d.main and data_plan.record:  # before the first step: what this run trains on
            record_data_state(run_dir, data, step)
        trainable = sum(p.numel() for _, p in named)
        total = sum(p.numel() for p in policy.parameters())
        if d.world > 1 and cfg.fsdp:
            trainable, total = trainable * d.world, total * d.world  # local shards -> approximate totals
        if tracker is not None:  # logged with the RunStarted event: the configuration and the dataset fingerprint
            tracker.describe(cfg.to_json(), str(getattr(data, "fingerprint", "")))
        report(ev.RunStarted(str(run_dir), step, cfg.steps, d.world, str(device), precision, trainable, total,
                             cfg.batch_size, resumed, base=cfg.base, base_path=str(folder) if folder else "",
                             model=model_config.name))

        params = [p for _, p in named]
        it = data.iterator(step)
        horizon, adim = policy.config.action_horizon, policy.config.action_dim
        t_last, samples_since, first_logged = time.monotonic(), 0, step
        loss_acc = torch.zeros((), dtype=torch.float64)
        n_acc = 0
        reason = "done"
        with _Stop() as stop:
            while step < cfg.steps:
                batch = next(it)
                obs = batch["observation"].to(device)
                actions = batch["actions"].to(device, non_blocking=True)
                pad = batch["action_is_pad"].to(device, non_blocking=True)
                noise, ftime = step_noise(cfg.seed, step, d.rank, local_b, d.world, horizon, adim)
                delays = step_delays(cfg.seed, step, d.rank, local_b, d.world, cfg.rtc_max_delay).to(device) \
                    if cfg.rtc_max_delay > 0 else None
                lr = cosine_lr(step, cfg.optim)
                set_lr(opt, lr)
                try:
                    with autocast(precision, device):
                        loss = forward(obs, actions, pad, noise.to(device), ftime.to(device), delays)
                    loss.backward()
                except torch.OutOfMemoryError as e:
                    raise TrainError("out_of_memory", _oom_message(device, cfg, precision), step) from e
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_norm)
                if hasattr(gnorm, "full_tensor"):
                    gnorm = gnorm.full_tensor()
                loss_v, gnorm_v = torch.stack([loss.detach().float(), gnorm.detach().float()]).tolist()
                if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
                    good = list_checkpoints(run_dir)
                    where = f"; the last good checkpoint is {good[-1][1]}" if good else ""
                    ep = batch.get("episode_index")
                    which = f" (episodes {ep.tolist()}, frames {batch['frame_index'].tolist()})" if ep is not None \
                        else ""
                    raise TrainError("nan_loss", f"non-finite {'loss' if not math.isfinite(loss_v) else 'gradient'}"
                                     f" at step {step + 1}, batch {step} of the stream{which}; stopped before the "
                                     f"update{where}. Fix: check those episodes' values, lower the learning rate, "
                                     "or check near-constant dims in norm_stats.json.", step)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update()
                step += 1
                loss_acc += loss_v
                n_acc += 1
                samples_since += cfg.batch_size
                if step % cfg.log_every == 0 or step == cfg.steps or stop.requested:
                    stats = torch.tensor([loss_acc.item(), float(n_acc)], dtype=torch.float64)
                    if d.world > 1:
                        dist.all_reduce(stats)
                    now = time.monotonic()
                    sps = samples_since / max(now - t_last, 1e-9)
                    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
                    report(ev.Step(step, float(stats[0] / stats[1]), lr, gnorm_v, sps,
                                   (cfg.steps - step) * cfg.batch_size / max(sps, 1e-9), now - t_setup, mem))
                    t_last, samples_since = now, 0
                    loss_acc.zero_()
                    n_acc = 0
                if cfg.val_every and step % cfg.val_every == 0 and step != first_logged:
                    with (ema.swapped_in() if ema is not None else contextlib.nullcontext()):
                        v = validate(policy, data, cfg, precision, device, step, tokenizer, d)
                    if v is not None:
                        report(dataclasses.replace(v, ema=ema is not None))
                stop_now = _agree(stop.requested, d)
                if step % cfg.save_every == 0 or step == cfg.steps or stop_now:
                    path = _save(run_dir, step, model, opt, ema, cfg, d)
                    report(ev.CheckpointSaved(step, str(path)))
                if stop_now:
                    reason = "cancelled"
                    break
        out = export_policy(run_dir, policy, ema.shadow if ema is not None else None, data, cfg, tok_path, step, d,
                            report, model_config.dtype)
        report(ev.Finished(step, reason, str(out) if out else None))
        if reason == "cancelled":
            raise KeyboardInterrupt
        return out
    except TrainError as e:
        report(ev.Failed(e.error, str(e), e.step if e.step is not None else step))
        report(ev.Finished(step, "error"))
        raise
    finally:
        if tracker is not None:
            tracker.close()
        if metrics is not None:
            metrics.close()
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _agree(flag: bool, d: Dist) -> bool:
    """All ranks stop together (a signal may reach one rank a step before another)."""
    if d.world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


EXPORT_COMMAND = "workbench policy export"


def export_policy(run_dir: Path, policy: Pi0, ema_shadow: Mapping[str, Tensor] | None, data: Any, cfg: TrainConfig,
                  tok_path: Path | None, step: int, d: Dist, report: Callable[[ev.Event], None],
                  dtype: str) -> Path | None:
    """Writes run_dir/policy from the training model itself, one tensor at a time (finetune.policy_export: EMA
    weights where EMA is on, LoRA merged per weight, in `dtype` = checkpoint.inference_dtype: bf16 for pi0), so
    the export needs about one weight of memory, not a second model. Collective under FSDP (rank 0 writes).
    A failure while writing (a full disk, out of memory) leaves no policy.partial and the checkpoints untouched,
    and is a TrainError whose message names the re-export command (`workbench policy export RUN`)."""
    from finetune.checkpoint import inference_dtype
    from finetune.policy_export import TrainingWeights
    from finetune.policy_folder import write_policy_folder

    out_dtype = inference_dtype(policy.config.replace(dtype=dtype))
    weights = TrainingWeights(policy, ema_shadow, out_dtype, on_progress=_export_progress(report) if d.main else None)
    if not d.main:
        weights.walk()
        return None
    report(ev.Status(f"exporting the policy folder: {_size(weights.nbytes)} of {out_dtype} weights"
                     f"{', LoRA merged' if cfg.lora else ''}{', EMA averages' if ema_shadow is not None else ''}"))
    try:
        out = write_policy_folder(run_dir / POLICY, weights.stream(), data=data, tokenizer_file=tok_path,
                                  train_config=cfg.to_json(), metrics=_metrics_summary(run_dir / METRICS), step=step)
    except (OSError, RuntimeError, MemoryError) as e:  # RuntimeError: torch's (out of memory, failed writes)
        try:
            weights.walk_rest()  # FSDP: the other ranks are still gathering
        except Exception:  # noqa: BLE001 - the export's own error is the one to report
            pass
        raise export_error(e, run_dir, step, weights.nbytes) from e
    report(ev.PolicySaved(step, str(out)))
    return out


def _export_progress(report: Callable[[ev.Event], None]) -> Callable[[int, int], None]:
    """Export progress as Status events, one per tenth of the bytes (the GUI shows the text)."""
    shown = {"tenth": 0}

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > shown["tenth"]:
            shown["tenth"] = tenth
            report(ev.Status(f"exporting the policy folder: {10 * tenth}% ({_size(done)} of {_size(total)})"))

    return progress


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def export_error(e: BaseException, run_dir: Path, step: int, nbytes: int) -> TrainError:
    """A failed export as a TrainError: disk_full / out_of_memory / export_failed, what is kept, what to run."""
    from finetune.train_state import _DISK_FULL

    chain: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    text = " ".join(str(x) for x in chain).lower()
    if any(isinstance(x, MemoryError) or isinstance(x, torch.OutOfMemoryError) for x in chain) or any(
            k in text for k in ("out of memory", "can't allocate memory", "cannot allocate memory")):
        error, what = "out_of_memory", "out of memory"
        fix = "Close other programs (or use a machine with more RAM)"
    elif any(isinstance(x, OSError) and x.errno in _DISK_FULL for x in chain) or "no space left" in text:
        error, what = "disk_full", "disk full"
        fix = f"Free at least {_size(nbytes)} on the disk of {run_dir}"
    else:
        error, what, fix = "export_failed", "failed", "Fix the cause"
    ckpts = list_checkpoints(run_dir)
    kept = f"the checkpoints are kept (last: {ckpts[-1][1]})" if ckpts else "no checkpoint of the run exists"
    return TrainError(error, f"exporting the policy folder {run_dir / POLICY} at step {step}: {what} ({e}). "
                      f"Nothing half-written is left, and {kept}. {fix}, then export it again from the last "
                      f"checkpoint: `{EXPORT_COMMAND} {run_dir}` (--step N for an earlier one).", step)


def _metrics_summary(path: Path) -> dict[str, Any]:
    last: dict[str, Any] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            e = ev.parse(line)
            if isinstance(e, (ev.Step, ev.Validation)):
                last[e.kind] = dataclasses.asdict(e)
    return last


__all__ = ["Dist", "LossModule", "TrainConfig", "TrainError", "build_policy", "step_delays", "step_noise", "train"]
