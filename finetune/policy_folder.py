"""The policy folder: everything the trials need to run a fine-tuned pi0 on the rig it was trained for.

    policy/
      policy.json          manifest: format, step, base checkpoint, LoRA (merged), file list
      config.json          pi0 model config (ours; finetune.model_config.Pi0Config)
      model.safetensors    weights, hub key layout (`lerobot/pi0_base` keys; LoRA already merged)
      norm_stats.json      openpi layout {"norm_stats": {"state": ..., "actions": ...}}      (finetune.data)
      transforms.json      the transform chain's config, shared by training and serving          (finetune.data)
      rig.json             cameras, joint layout, gripper constants, control rate                 (finetune.data)
      dataset.json         dataset fingerprint and the train/validation episode lists           (finetune.data)
      tokenizer.model      the SentencePiece model the prompts were tokenized with
      train_config.json    the run's settings;  metrics.json: last step and validation metrics

Written atomically (policy.partial, fsync, swap), so a crash never leaves half a policy where a good one was;
a failed write (full disk, out of memory) removes policy.partial.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from recorder.durable import fsync_tree
from finetune.model.pi0 import Pi0

if TYPE_CHECKING:
    from finetune.checkpoint import WeightStream

POLICY_FILE = "policy.json"
POLICY_FORMAT = "aloha-workbench/policy"
POLICY_VERSION = 1
TOKENIZER_FILE = "tokenizer.model"


class PolicyFolderError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedPolicy:
    folder: Path
    model: Pi0
    manifest: Mapping[str, Any]
    tokenizer: Any  # finetune.tokenizer.PromptTokenizer
    transforms: Any | None  # finetune.transforms.PolicyTransforms (None for synthetic-data test runs)


def write_policy_folder(folder: Path, model: "Pi0 | WeightStream", *, data: Any = None,
                        tokenizer_file: Path | None = None, train_config: Mapping[str, Any] | None = None,
                        metrics: Mapping[str, Any] | None = None, step: int = 0) -> Path:
    """model: a plain Pi0 (LoRA merged) or a WeightStream of one (finetune.checkpoint; the trainer's export
    streams the training model's tensors). data: the run's TrainingData (its save() writes norm stats,
    transforms, rig and dataset files). Any failure (a full disk, out of memory, Ctrl-C) removes policy.partial
    and leaves an earlier policy folder as it was."""
    from finetune.checkpoint import save_pi0

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_pi0(model, tmp)
        if data is not None and hasattr(data, "save"):
            data.save(tmp)
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        if train_config is not None:
            (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(dict(metrics or {}), indent=2) + "\n")
        manifest = {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "step": step,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": model.config.name,
            "base": (train_config or {}).get("base"),
            "lora_merged": bool((train_config or {}).get("lora")),
            # training-time real-time chunking: the runtime then passes committed actions as clean tokens (0: off)
            "rtc_max_delay": int((train_config or {}).get("rtc_max_delay") or 0),
            "files": sorted(p.name for p in tmp.iterdir()) + [POLICY_FILE],
        }
        (tmp / POLICY_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def is_policy_folder(folder: Path) -> bool:
    return (Path(folder) / POLICY_FILE).is_file() and (Path(folder) / "model.safetensors").is_file()


def load_policy(folder: Path, device: torch.device | str = "cpu", dtype: str | None = None) -> LoadedPolicy:
    """The model (strict load, hub keys), its tokenizer and the serving transforms. dtype None: bf16 for pi0
    (also a policy an older export wrote in float32), the small CPU models as stored (checkpoint.inference_dtype);
    "float32" on request."""
    from finetune.checkpoint import load_pi0
    from finetune.tokenizer import PromptTokenizer

    folder = Path(folder)
    if not is_policy_folder(folder):
        raise PolicyFolderError(f"{folder} is not a policy folder (no {POLICY_FILE} + model.safetensors); "
                                "train one with `workbench train` (it writes runs/NAME/policy)")
    manifest = json.loads((folder / POLICY_FILE).read_text())
    if manifest.get("format") != POLICY_FORMAT or int(manifest.get("version", 0)) > POLICY_VERSION:
        raise PolicyFolderError(f"{folder}: unsupported policy format {manifest.get('format')!r} "
                                f"v{manifest.get('version')}")
    model = load_pi0(folder, device=device, dtype=dtype)
    # checked against the model: a full-size policy must carry PaliGemma's tokenizer (finetune.tokenizer)
    tok = PromptTokenizer.for_model(folder / TOKENIZER_FILE, model.config) \
        if (folder / TOKENIZER_FILE).is_file() else None
    transforms = None
    if (folder / "transforms.json").is_file():
        from finetune.transforms import PolicyTransforms

        transforms = PolicyTransforms.from_folder(folder, tok)
    return LoadedPolicy(folder, model, manifest, tok, transforms)


def push_policy(folder: Path, repo_id: str, *, private: bool = True, token: str | None = None,
                progress: Callable[[str, float], None] | None = None) -> str:
    """Uploads a policy folder as a hub model repo through the dataset push (recorder.hub): per-file byte
    progress, and a cancel (an exception raised from `progress`) commits nothing."""
    from recorder.hub import push_to_hub

    if not is_policy_folder(folder):
        raise PolicyFolderError(f"{folder} is not a policy folder")
    return push_to_hub(Path(folder), repo_id, private=private, token=token, repo_type="model",
                       commit_message="Upload pi0 policy from aloha-workbench", progress=progress)


__all__ = ["LoadedPolicy", "PolicyFolderError", "is_policy_folder", "load_policy", "push_policy",
           "write_policy_folder"]
