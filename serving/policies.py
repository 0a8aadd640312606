"""What `workbench serve` can serve: a trained pi0 or pi0.5 policy folder (or a hub id; its config.json says which)
as a finetune.runtime.PolicyRuntime, or a replay folder (replay.json: a recorded episode's actions as chunks) as a
finetune.replay_policy.ReplayPolicy.
A policy trained elsewhere -- a LeRobot pi0 folder or an openpi PyTorch checkpoint (finetune.foreign_policy) --
becomes a ForeignPolicyRuntime (a PolicyRuntime over its statistics and conventions). All have what
serving.server.PolicyServer needs: `infer(state, images, prompt, seed=, [step=, prefix=, delay=])`, `metadata()`
and `action_shape`.

    policy = load_served_policy("runs/cube/policy", device="cuda", rig=rig_config)   # PolicyRuntime
    policy = load_served_policy("runs/replay_ep3")                                   # ReplayPolicy
    policy = load_served_policy("outputs/.../pretrained_model")                     # LeRobot pi0
    policy = load_served_policy("ckpts/run/30000", foreign=ForeignOptions(config="pi0_aloha_sim"))   # openpi
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def load_served_policy(folder_or_hub: str | Path, device: Any = "cpu", *, rig: Any = None,
                       num_steps: int | None = None, revision: str | None = None,
                       token: str | bool | None = None, foreign: Any = None) -> Any:
    """A ReplayPolicy for a replay folder (replay.json), a ForeignPolicyRuntime for a LeRobot / openpi checkpoint
    (`foreign`: a finetune.foreign_policy.ForeignOptions, what the operator said about it), else a PolicyRuntime
    (a local folder or a hub id). With `rig`, each refuses a policy trained (or an episode recorded) on a different
    rig."""
    from finetune.foreign_policy import ForeignOptions, foreign_layout, load_foreign_policy
    from finetune.hub import resolve_folder
    from finetune.policy_folder import PolicyFolderError, is_policy_folder
    from finetune.replay_policy import ReplayPolicy, is_replay_folder
    from finetune.runtime import POLICY_PATTERNS, PolicyRuntime

    p = Path(folder_or_hub).expanduser()
    folder = p if p.is_dir() else resolve_folder(folder_or_hub, revision=revision, token=token,
                                                 allow_patterns=POLICY_PATTERNS)
    options = foreign or ForeignOptions()
    if foreign_layout(folder) is not None:
        return load_foreign_policy(folder, device=device, rig=rig, num_steps=num_steps, options=options)
    given = [f"--{k.replace('_', '-')}" for k, v in vars(options).items() if v]
    if given:  # our own folders carry their config, statistics, cameras and tokenizer
        raise PolicyFolderError(f"{' '.join(given)} describe a LeRobot or openpi checkpoint; {folder} is a "
                                "workbench folder that says all of it itself: leave them out")
    if is_replay_folder(folder):
        return ReplayPolicy.load(folder, rig=rig)
    if not is_policy_folder(folder):
        raise PolicyFolderError(f"{folder} is not a policy folder (policy.json + model.safetensors: train one with "
                                "`workbench train`), nor a replay folder (replay.json), a LeRobot pi0 folder "
                                "(config.json with \"type\": \"pi0\" + policy_preprocessor.json) or an openpi "
                                "checkpoint (<step>/model.safetensors + assets/<asset_id>/norm_stats.json)")
    return PolicyRuntime.load(folder, device=device, rig=rig, num_steps=num_steps)


def image_inputs(policy: Any) -> dict[str, Any]:
    """What the server announces about the frames `policy` reads (serving.protocol's "image_cameras" and
    "image_size"), so that a client sends only those cameras, already resized: a trained policy's transforms
    config names its rig cameras (camera_map) and the side it resizes them to (image_size); a replay policy reads
    no images ([] and None). {} for anything else (a client then sends every camera as it is)."""
    meta = policy.metadata()
    if "image_cameras" in meta:  # the policy says itself
        return {"image_cameras": list(meta["image_cameras"]), "image_size": meta.get("image_size")}
    if meta.get("replay") is True or meta.get("policy_type") == "replay":
        return {"image_cameras": [], "image_size": None}
    cfg = getattr(getattr(getattr(policy, "policy", None), "transforms", None), "config", None)
    cams, size = getattr(cfg, "rig_cameras", None), getattr(cfg, "image_size", None)
    if cams is None or not isinstance(size, int):
        return {}
    return {"image_cameras": [str(c) for c in cams], "image_size": int(size)}


__all__ = ["image_inputs", "load_served_policy"]
