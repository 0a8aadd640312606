"""Policy runtime: a policy folder (or hub id) -> rig actions for one rig observation.

    rt = PolicyRuntime.load("runs/cube/policy", device="cuda", rig=rig_config)   # refuses a mismatched rig
    actions = rt.infer(state14, {"cam_high": hxwx3_uint8, ...}, "transfer the cube")  # [50, 14] rig units

The chain is the training one: PolicyTransforms.observation -> Pi0.sample_actions (prefix K/V cache) ->
PolicyTransforms.actions. Inference is serialized by a lock, so one runtime may be shared by threads.

Real-time chunking: `infer(..., prefix=rig_actions_kx14, delay=d)` continues the current chunk. The prefix goes
through the same transforms (with this call's state) into model space; a policy trained with training-time RTC
(manifest `rtc_max_delay > 0`) gets the first d prefix actions as clean tokens (Pi0.denoise_conditioned), any
other policy is inpainted towards the whole prefix by guidance (Pi0.denoise_guided).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from finetune.episodes import RIG_FILE, RigSnapshot
from finetune.model.rtc import DEFAULT_MAX_GUIDANCE
from finetune.policy_folder import LoadedPolicy, PolicyFolderError, load_policy
from finetune.rig_check import RigCheck, RigDescription, compare_rigs, rig_differences, rig_metadata

POLICY_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]
log = logging.getLogger(__name__)


class RigMismatchError(PolicyFolderError):
    """The policy was trained for a different rig (cameras, joints, control rate or gripper constants)."""


def check_rig(folder: Path, rig: Any, made_for: str, *, allow_sim_policy: bool | None = None) -> RigSnapshot | None:
    """The folder's rig snapshot (rig.json, None if absent); with `rig`, refuses a folder made for another rig
    (camera names, joint layout, control rate, gripper constants: finetune.rig_check), naming the differences, and
    logs one line saying what was checked and what could not be. `made_for` words the refusal ("policy {folder}
    was trained for"). allow_sim_policy: see compare_rigs; the default (None) is the server's: a policy trained on a
    simulated backend for a real rig is noted, and the robot side (open_policy) refuses it unless allowed."""
    snapshot = None
    if (folder / RIG_FILE).is_file():
        snapshot = RigSnapshot.from_json(json.loads((folder / RIG_FILE).read_text()))
    if rig is not None:
        if snapshot is None:
            raise RigMismatchError(f"{folder} has no {RIG_FILE}; cannot check it against rig "
                                   f"{getattr(rig, 'name', '')!r}")
        check = compare_rigs(snapshot, rig, allow_sim_policy=allow_sim_policy, policy=str(folder))
        if check.differences:
            raise RigMismatchError(f"{made_for.format(folder=folder)} rig {snapshot.name!r}, which differs from this "
                                   f"rig:\n  " + "\n  ".join(check.differences)
                                   + (f"\n(not checked: {'; '.join(check.unchecked)})" if check.unchecked else ""))
        (log.warning if check.unchecked or check.notes else log.info)("%s", check.summary())
    return snapshot


# The trained range a client checks every chunk against (metadata "action_bounds"): the training actions' q01..q99
# (which leave out 2% of the data by design) widened on each side by this fraction of their span, and by at least
# ACTION_BOUND_FLOOR (rad; gripper: normalized) so that a joint that barely moved in training may still move a little.
ACTION_BOUND_MARGIN = 0.25
ACTION_BOUND_FLOOR = 0.05


def action_bounds(config: Any, stats: Any, margin: float = ACTION_BOUND_MARGIN,
                  floor: float = ACTION_BOUND_FLOOR) -> dict[str, Any] | None:
    """The range of the training actions in rig units, for the robot side's chunk check (workbench.deploy.
    chunk_check): {"lo": [D], "hi": [D], "relative": [D], "margin", "floor"}; a `relative` dim (the delta-action arm
    joints) bounds the offset of an action from the state its chunk was computed from, the others the action itself.

    The statistics are in pi0's space (finetune.stats: after the joint flip, the gripper conversion and the delta
    joints, over every step of every chunk); each of those maps is linear per dim, so q01/q99 convert exactly:
    a_rig = scale * a_pi + offset (+ state when relative). None without quantiles (nothing to announce)."""
    q01, q99 = getattr(stats, "q01", None), getattr(stats, "q99", None)
    if config is None or q01 is None or q99 is None:
        return None
    d = int(config.rig_dim)
    q01, q99 = np.asarray(q01, np.float64)[:d], np.asarray(q99, np.float64)[:d]
    if q01.shape != (d,) or q99.shape != (d,) or not (np.isfinite(q01).all() and np.isfinite(q99).all()):
        return None
    scale, offset = np.ones(d), np.zeros(d)
    relative = np.array(config.delta_mask, dtype=bool) if config.delta_actions else np.zeros(d, bool)
    if config.adapt_to_pi:
        scale = np.asarray(config.joint_flip, np.float64).copy()
        g = config.gripper
        for j in config.gripper_dims:  # a_pi = flip * a * (open - closed) + closed - offset (gripper_action_to_pi)
            span = g.joint_open - g.joint_closed
            scale[j], offset[j] = scale[j] / span, scale[j] * (g.action_offset - g.joint_closed) / span
            if relative[j]:  # a delta gripper is relative to a non-linearly converted state: no offset bound
                return None
    a, b = scale * q01 + offset, scale * q99 + offset
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    widen = np.maximum(margin * (hi - lo), floor)
    return {"lo": (lo - widen).tolist(), "hi": (hi + widen).tolist(), "relative": relative.tolist(),
            "margin": float(margin), "floor": float(floor)}


def _resolve(folder_or_hub_id: str | Path, revision: str | None, token: str | bool | None) -> Path:
    from finetune.hub import resolve_folder

    return resolve_folder(folder_or_hub_id, revision=revision, token=token, allow_patterns=POLICY_PATTERNS)


@dataclass
class PolicyRuntime:
    """A loaded policy with its serving transforms; `infer` gives rig actions [H, 14]."""

    policy: LoadedPolicy
    device: torch.device
    rig_snapshot: RigSnapshot | None
    num_steps: int | None = None
    max_guidance: float = DEFAULT_MAX_GUIDANCE  # inference-time RTC: the guidance weight clip (beta)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder_or_hub_id: str | Path, device: torch.device | str = "cpu", *, rig: Any = None,
             dtype: str | None = None, num_steps: int | None = None, revision: str | None = None,
             token: str | bool | None = None) -> "PolicyRuntime":
        """Loads the folder (or downloads the hub repo); with `rig`, refuses a policy trained for another rig."""
        folder = _resolve(folder_or_hub_id, revision, token)
        snapshot = check_rig(folder, rig, "policy {folder} was trained for")
        device = torch.device(device)
        policy = load_policy(folder, device=device, dtype=dtype)
        if policy.transforms is None or policy.tokenizer is None:
            raise PolicyFolderError(f"{folder} has no serving transforms (transforms.json, norm_stats.json, "
                                    "tokenizer.model); it was not trained on recorded episodes")
        policy.model.eval()
        return cls(policy, device, snapshot, num_steps)

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.rig_snapshot.cameras if self.rig_snapshot else tuple(self.policy.model.config.camera_names)

    @property
    def action_shape(self) -> tuple[int, int]:
        return (self.policy.model.config.action_horizon, self.policy.transforms.config.rig_dim)

    def metadata(self) -> dict[str, Any]:
        """What a server announces to its clients."""
        snap = self.rig_snapshot
        return {"policy": str(self.policy.folder), "step": self.policy.manifest.get("step"),
                "model": self.policy.manifest.get("model"), "cameras": list(self.cameras),
                "action_horizon": self.action_shape[0], "action_dim": self.action_shape[1],
                "rig": snap.name if snap else None, "control_hz": snap.control_hz if snap else None,
                **rig_metadata(snap),
                "rtc": self.rtc_mode, "rtc_max_delay": self.rtc_max_delay, "task": self.training_task,
                "train_sim_seeds": self.training_sim_seeds,
                "action_bounds": action_bounds(self.policy.transforms.config,
                                               self.policy.transforms.norm_stats.get("actions"))}

    @property
    def training_task(self) -> str | None:
        """The most frequent task prompt of the training episodes (dataset.json), the trials' default prompt."""
        from finetune.policy_meta import trained_task

        return trained_task(self.policy.folder)

    @property
    def training_sim_seeds(self) -> list[int] | None:
        """The simulator scenes of the training episodes (trials hold out from them); None: unknown."""
        from finetune.policy_meta import training_sim_seeds

        return training_sim_seeds(self.policy.folder)

    @property
    def rtc_max_delay(self) -> int:
        """The largest delay the policy was trained to take as clean prefix tokens (0: not trained for RTC)."""
        return int(self.policy.manifest.get("rtc_max_delay") or 0)

    @property
    def rtc_mode(self) -> str:
        """How a prefix is honoured: "trained" (clean prefix tokens) or "guided" (inference-time inpainting)."""
        return "trained" if self.rtc_max_delay > 0 else "guided"

    def make_noise(self, seed: int) -> torch.Tensor:
        """The noise for a seed: [1, H, action_dim] standard normal from torch.Generator(seed)."""
        c = self.policy.model.config
        return torch.randn(1, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(int(seed)))

    def infer(self, state14: np.ndarray, images: Mapping[str, np.ndarray], prompt: str,
              noise: np.ndarray | torch.Tensor | None = None, *, seed: int | None = None,
              prefix: np.ndarray | None = None, delay: int = 0, step: int | None = None) -> np.ndarray:
        """Rig state [14] + frames {rig camera: HxWx3 uint8} + prompt -> rig actions [H, 14] float32.

        noise: [H, action_dim] or [1, H, action_dim] (model space); seed: noise from make_noise(seed).
        prefix: real-time chunking, rig-unit actions [k, 14] (k <= H) the new chunk continues: prefix[i] is meant
        for the new chunk's step i, and the first `delay` (0 <= delay <= k) execute before it arrives. Trained-RTC
        policies reproduce those `delay` actions exactly (clean tokens); others are guided towards the prefix with
        the soft mask (frozen on the first `delay`, decaying to k). step: the observation's tick index, accepted
        for the ChunkPolicy interface and unused by a model policy."""
        state = np.asarray(state14, dtype=np.float64)
        if state.shape != (self.action_shape[1],):
            raise ValueError(f"state must have shape ({self.action_shape[1]},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError("state has non-finite values")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f"missing camera images {missing} (policy cameras: {list(self.cameras)})")
        for name, img in images.items():
            a = np.asarray(img)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
                raise ValueError(f"image {name!r} must be HxWx3 uint8, got {a.dtype} {list(a.shape)}")
        c = self.policy.model.config
        if noise is None and seed is not None:
            noise = self.make_noise(seed)
        if noise is not None:
            noise = torch.as_tensor(np.asarray(noise, dtype=np.float32)) if not isinstance(noise, torch.Tensor) \
                else noise.float()
            if noise.ndim == 2:
                noise = noise[None]
            if tuple(noise.shape) != (1, c.action_horizon, c.action_dim):
                raise ValueError(f"noise must be [{c.action_horizon}, {c.action_dim}], got {list(noise.shape)}")
            noise = noise.to(self.device)
        rig_prefix = self._check_prefix(prefix, delay)
        if rig_prefix is not None and self.rtc_mode == "trained" and int(delay) > self.rtc_max_delay:
            # a trained-RTC policy only learned clean prefixes up to rtc_max_delay: a longer one is outside what
            # it was trained on, so it gets the longest it knows (the rest of the prefix is simply not frozen)
            if not getattr(self, "_delay_warned", False):
                self._delay_warned = True
                log.warning("RTC delay %d exceeds the %d this policy was trained with; using %d (further cases "
                            "are clamped silently)", int(delay), self.rtc_max_delay, self.rtc_max_delay)
            delay = self.rtc_max_delay
        with self._lock:
            obs = self.policy.transforms.observation(state, {k: np.asarray(v) for k, v in images.items()}, prompt,
                                                     device=self.device)
            if rig_prefix is None or len(rig_prefix) == 0:
                out = self.policy.model.sample_actions(obs, noise=noise, num_steps=self.num_steps)
            else:
                out = self._sample_rtc(obs, state, noise, rig_prefix, int(delay))
        return self.policy.transforms.actions(out[0], state)

    def _check_prefix(self, prefix: np.ndarray | None, delay: int) -> np.ndarray | None:
        if prefix is None:
            if delay:
                raise ValueError(f"delay={delay} without a prefix")
            return None
        h, dim = self.action_shape
        try:
            p = np.asarray(prefix, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"prefix must be a numeric array [k, {dim}] (rig units): {e}") from e
        if p.ndim != 2 or p.shape[1] != dim or p.shape[0] > h:
            raise ValueError(f"prefix must have shape [k, {dim}] with k <= {h} (rig units), got {list(p.shape)}")
        if not np.all(np.isfinite(p)):
            raise ValueError("prefix has non-finite values")
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)):
            raise ValueError(f"delay must be an integer, got {type(delay).__name__}")
        if not (0 <= int(delay) <= p.shape[0]):
            raise ValueError(f"delay must be in [0, {p.shape[0]}] (the prefix length), got {delay}")
        return p

    def _sample_rtc(self, obs: Any, state: np.ndarray, noise: torch.Tensor | None, rig_prefix: np.ndarray,
                    delay: int) -> torch.Tensor:
        """The prefix through this call's transforms (padded to H with its last action, weight 0 there) -> the
        guided or the conditioned sampler, depending on how the policy was trained."""
        model = self.policy.model
        c = model.config
        k = len(rig_prefix)
        padded = np.concatenate([rig_prefix, np.repeat(rig_prefix[-1:], c.action_horizon - k, axis=0)])
        model_prefix = self.policy.transforms.state_actions(state, padded).actions
        model_prefix = torch.as_tensor(np.asarray(model_prefix, dtype=np.float32), device=self.device)[None]
        if noise is None:
            noise = torch.randn(1, c.action_horizon, c.action_dim, device=self.device)
        cache = model.prefill(obs)
        if self.rtc_mode == "trained":
            return model.denoise_conditioned(cache, obs.state, noise, model_prefix, delay, self.num_steps)
        return model.denoise_guided(cache, obs.state, noise, model_prefix, delay, k, self.num_steps,
                                    max_guidance=self.max_guidance)


__all__ = ["PolicyRuntime", "RigCheck", "RigDescription", "RigMismatchError", "check_rig", "compare_rigs",
           "rig_differences", "rig_metadata"]
