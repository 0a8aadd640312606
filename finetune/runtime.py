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
import threading
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from finetune.episodes import ALOHA_DIM_NAMES, RIG_FILE, RigSnapshot
from finetune.model.rtc import DEFAULT_MAX_GUIDANCE
from finetune.policy_folder import LoadedPolicy, PolicyFolderError, load_policy

POLICY_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]
GRIPPER_TOL = 1e-6


class RigMismatchError(PolicyFolderError):
    """The policy was trained for a different rig (cameras, joints or gripper constants)."""


@dataclass(frozen=True)
class RigDescription:
    """What a policy needs to match: camera names, joint layout, gripper constants (None: not checked)."""

    cameras: tuple[str, ...]
    joint_names: tuple[str, ...] | None = None
    gripper: Mapping[str, float] | None = None

    @staticmethod
    def of(rig: Any) -> "RigDescription":
        """From a RigDescription, a workbench RigConfig, a RigSnapshot or a rig.json-like mapping."""
        if isinstance(rig, RigDescription):
            return rig
        get = (lambda k: rig.get(k)) if isinstance(rig, Mapping) else (lambda k: getattr(rig, k, None))
        cams = tuple(c if isinstance(c, str) else c.name for c in (get("cameras") or ()))
        joints = get("joint_names")
        if joints is None and get("arms") is not None:  # a RigConfig: ALOHA's two 7-joint follower arms
            joints = ALOHA_DIM_NAMES
        gripper = get("gripper")
        if gripper is not None and is_dataclass(gripper):
            gripper = asdict(gripper)
        return RigDescription(cams, tuple(joints) if joints is not None else None,
                              dict(gripper) if gripper is not None else None)


def rig_differences(trained: RigDescription, rig: RigDescription) -> list[str]:
    """Human-readable differences between the rig a policy was trained for and the given rig ([] if none)."""
    out: list[str] = []
    missing = [c for c in trained.cameras if c not in rig.cameras]
    extra = [c for c in rig.cameras if c not in trained.cameras]
    if missing or extra:
        out.append(f"cameras: policy trained on {list(trained.cameras)}, rig has {list(rig.cameras)}"
                   + (f" (missing {missing})" if missing else "") + (f" (not in training {extra})" if extra else ""))
    if trained.joint_names is not None and rig.joint_names is not None \
            and tuple(trained.joint_names) != tuple(rig.joint_names):
        out.append(f"joint layout: policy {list(trained.joint_names)}, rig {list(rig.joint_names)}")
    if trained.gripper is not None and rig.gripper is not None:
        for k in sorted(set(trained.gripper) | set(rig.gripper)):
            a, b = trained.gripper.get(k), rig.gripper.get(k)
            if a is None or b is None or abs(float(a) - float(b)) > GRIPPER_TOL:
                out.append(f"gripper constant {k}: policy {a}, rig {b}")
    return out


def check_rig(folder: Path, rig: Any, made_for: str) -> RigSnapshot | None:
    """The folder's rig snapshot (rig.json, None if absent); with `rig`, refuses a folder made for another rig,
    naming the differences. `made_for` words the refusal ("policy {folder} was trained for")."""
    snapshot = None
    if (folder / RIG_FILE).is_file():
        snapshot = RigSnapshot.from_json(json.loads((folder / RIG_FILE).read_text()))
    if rig is not None:
        if snapshot is None:
            raise RigMismatchError(f"{folder} has no {RIG_FILE}; cannot check it against rig "
                                   f"{getattr(rig, 'name', '')!r}")
        diffs = rig_differences(RigDescription.of(snapshot), RigDescription.of(rig))
        if diffs:
            raise RigMismatchError(f"{made_for.format(folder=folder)} rig {snapshot.name!r}, which differs from this "
                                   f"rig:\n  " + "\n  ".join(diffs))
    return snapshot


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
                "rtc": self.rtc_mode, "rtc_max_delay": self.rtc_max_delay, "task": self.training_task}

    @property
    def training_task(self) -> str | None:
        """The most frequent task prompt of the training episodes (dataset.json), the trials' default prompt."""
        try:
            tasks = json.loads((Path(self.policy.folder) / "dataset.json").read_text()).get("tasks") or []
        except (OSError, ValueError):
            return None
        return str(tasks[0]) if tasks else None

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


__all__ = ["PolicyRuntime", "RigDescription", "RigMismatchError", "check_rig", "rig_differences"]
