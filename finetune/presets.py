"""The training presets: one table of complete, named post-training set-ups (openpi's `training/config.py` idea).

`workbench train --config NAME` (workbench/cli_train.py), the Train tab (ui/train_panel.py) and the closed loop
(workbench/deploy/closed_loop.py) all select a preset here by name and override single fields with
`dataclasses.replace` (the CLI's flags, the tab's steps and batch boxes); nothing else spells a preset's values.
`finetune.train.TrainConfig.from_preset` turns one into a run's configuration.

No torch import: the GUI and the argument parser read this table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from finetune.hub import DEFAULT_CHECKPOINT_REPO as PI0_BASE

RANDOM_BASE = "random"  # base = random weights (the small CPU models; nothing to download)
PI05_BASE = "lerobot/pi05_base"  # pi0.5's base (pi05.md: one float32 model.safetensors, 3.6 B parameters)


@dataclass(frozen=True)
class TrainPreset:
    """A whole training set-up. `warmup_steps` None: min(1000, steps // 10) of whatever `steps` ends up being;
    the learning rate warms up to `lr` and decays (cosine) to lr / 10 at the last step."""

    name: str  # what --config takes
    label: str  # the Train tab's choice
    note: str  # one line under it: what the preset is for, what it needs
    model: str  # finetune.model_config.Pi0Config variant (a base checkpoint's own config.json wins)
    base: str  # hub id, local folder, an earlier run, or RANDOM_BASE
    lora: bool
    steps: int
    batch_size: int  # global, split over the processes
    lr: float  # peak learning rate
    val_every: int  # 0 = no validation
    save_every: int
    warmup_steps: int | None = None
    ema_decay: float | None = None  # None: no EMA of the weights
    cache_images: bool = False  # decode and resize every frame once into RAM (small models on a CPU)
    precision: str = "auto"  # auto: bf16-amp on CUDA, fp32 on the CPU (finetune.precision)
    gradient_checkpointing: bool = True
    device: str = "auto"  # auto: CUDA when visible, else the CPU

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(1000, self.steps // 10)

    @property
    def end_lr(self) -> float:
        return self.lr / 10

    @property
    def random_init(self) -> bool:
        return self.base == RANDOM_BASE

    def replace(self, **changes: object) -> "TrainPreset":
        """Overrides; None values are ignored (an option left out keeps the preset's value)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# openpi's fine-tuning set-up (finetune.precision.OptimConfig's defaults are its optimizer's)
_PI0 = dict(model="pi0", base=PI0_BASE, steps=20_000, batch_size=32, lr=2.5e-5, val_every=1000, save_every=1000)
_PI05 = {**_PI0, "model": "pi05", "base": PI05_BASE}  # openpi's pi05 fine-tunes use pi0's optimizer set-up
# random-init CPU models: a tokenizer trained into the run folder, fp32, frames cached (decoding costs more than
# the step), no gradient checkpointing (nothing to save at this size)
_CPU = dict(base=RANDOM_BASE, lr=3e-3, cache_images=True, precision="fp32", gradient_checkpointing=False)

PRESETS: tuple[TrainPreset, ...] = (
    TrainPreset("pi0-lora", "LoRA (one 24 GB card)",
                f"pi0 from {PI0_BASE}, rank 16/32 adapters, gradient checkpointing; estimated 16-24 GB at "
                "batch 32", lora=True, **_PI0),
    TrainPreset("pi0", "Full fine-tune (80 GB card, or several)",
                f"pi0 from {PI0_BASE}, fp32 master weights + bf16; estimated ~62 GB at batch 32 (use several "
                "GPUs below 80 GB)", lora=False, **_PI0),
    TrainPreset("pi05-lora", "pi0.5 LoRA (one 24 GB card)",
                f"pi0.5 from {PI05_BASE} (state in the prompt, quantile normalization), rank 16/32 adapters, "
                "gradient checkpointing; estimated ~30 GB at batch 32 (its 200-token prompt: ~3 GB more than "
                "pi0), batch 20 on a 24 GB card", lora=True, **_PI05),
    TrainPreset("pi05", "pi0.5 full fine-tune (80 GB card, or several)",
                f"pi0.5 from {PI05_BASE}, fp32 master weights + bf16; estimated ~58 GB at batch 32 (use several "
                "GPUs below 80 GB)", lora=False, **_PI05),
    TrainPreset("small", "Small model (learns on a CPU)",
                "pi0_small, 1.6 M parameters from random weights, 56 px cameras: learns a task from a few "
                "demonstrations in minutes to an hour on a CPU (the closed loop's model)",
                model="pi0_small", lora=False, steps=3000, batch_size=16, val_every=300, save_every=300, **_CPU),
    TrainPreset("tiny", "Tiny test model (CPU)", "a two-layer model: checks the data and the set-up in seconds",
                model="pi0_tiny", lora=False, steps=200, batch_size=4, val_every=50, save_every=50, **_CPU),
    TrainPreset("pi05-small", "Small pi0.5 model (learns on a CPU)",
                "pi05_small: the small model's numbers as pi0.5 (state in the prompt, adaptive expert norms), "
                "from random weights", model="pi05_small", lora=False, steps=3000, batch_size=16, val_every=300,
                save_every=300, **_CPU),
    TrainPreset("pi05-tiny", "Tiny pi0.5 test model (CPU)", "a two-layer pi0.5: checks the set-up in seconds",
                model="pi05_tiny", lora=False, steps=200, batch_size=4, val_every=50, save_every=50, **_CPU),
)
NAMES: tuple[str, ...] = tuple(p.name for p in PRESETS)
DEFAULT = "pi0"  # `workbench train` without --config
CPU_DEFAULT = "small"  # the Train tab's choice on a machine without a CUDA card: the model that learns on a CPU
# The episodes a run trains on unless told otherwise (`workbench train --outcome`, the Train tab's filter): the
# successful demonstrations; a failure is not a behaviour to imitate. ALL_OUTCOMES ("all") takes every label.
DEFAULT_OUTCOMES: tuple[str, ...] = ("success",)
ALL_OUTCOMES = "all"


def preset(name: str) -> TrainPreset:
    for p in PRESETS:
        if p.name == name:
            return p
    raise ValueError(f"unknown training preset {name!r}; known: {', '.join(NAMES)}")


def names_for_kind(kind: str) -> tuple[str, ...]:
    """The presets that train a model of `kind` ("pi0" / "pi05", Pi0Config.kind): what an error about a base of
    that kind suggests."""
    from finetune.model_config import Pi0Config

    return tuple(p.name for p in PRESETS if Pi0Config.variant(p.model).kind == kind)


def describe(field: str) -> str:
    """'pi0-lora 20000, pi0 20000, small 3000, tiny 200' for a field: the CLI's help shows the table's values."""
    return ", ".join(f"{p.name} {getattr(p, field)}" for p in PRESETS)


__all__ = ["ALL_OUTCOMES", "CPU_DEFAULT", "DEFAULT", "DEFAULT_OUTCOMES", "NAMES", "PI0_BASE", "PI05_BASE", "PRESETS",
           "RANDOM_BASE", "TrainPreset", "describe", "names_for_kind", "preset"]
