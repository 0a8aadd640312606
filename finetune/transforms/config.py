"""The transform chain's configuration: everything that decides how rig data becomes model input and back.

Frozen and JSON-serializable: it is saved as `transforms.json` in the policy folder so that serving rebuilds the
exact chain training used. Defaults are openpi's pi0 ALOHA ones (camera slots, adapt_to_pi constants, delta joints);
`for_model` of a pi0.5 config switches to pi0.5's quantile normalization and discretized-state prompt.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from finetune.model_config import Pi0Config

TRANSFORMS_FILE = "transforms.json"
FORMAT = "aloha-workbench/pi0-transforms"
VERSION = 1

# rig camera -> pi0 slot (openpi's ALOHA mapping; cam_low has no slot and is dropped)
DEFAULT_CAMERA_MAP: tuple[tuple[str, str], ...] = (
    ("cam_high", "base_0_rgb"),
    ("cam_left_wrist", "left_wrist_0_rgb"),
    ("cam_right_wrist", "right_wrist_0_rgb"),
)
# per arm [waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate, gripper]: shoulder and elbow negated
ARM_JOINT_FLIP: tuple[float, ...] = (1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0)
GRIPPER_DIMS: tuple[int, ...] = (6, 13)
# delta actions for the 12 arm joints; grippers stay absolute (openpi make_bool_mask(6, -1, 6, -1))
DELTA_MASK: tuple[bool, ...] = (True,) * 6 + (False,) + (True,) * 6 + (False,)


@dataclass(frozen=True)
class GripperConversion:
    """openpi's adapt_to_pi gripper constants (ALOHA 1 finger range, horn geometry, pi0's angular range)."""

    finger_closed: float = 0.01844  # m; the normalized follower finger's 0
    finger_open: float = 0.05800  # m; its 1
    arm_length: float = 0.036
    horn_radius: float = 0.022
    angle_min: float = 0.5476  # rad; pi0's state gripper 0
    angle_max: float = 1.6296  # rad; pi0's state gripper 1
    joint_closed: float = -0.6213  # rad; ALOHA's normalized gripper joint 0 (action space)
    joint_open: float = 1.4910  # rad; its 1
    action_offset: float = 0.5476  # rad; pi0 action gripper = joint - offset


@dataclass(frozen=True)
class TransformConfig:
    """How a rig sample maps to pi0's inputs. `camera_map` pairs rig cameras with the model's `camera_slots`."""

    camera_slots: tuple[str, ...]
    camera_map: tuple[tuple[str, str], ...] = DEFAULT_CAMERA_MAP
    image_size: int = 224
    rig_dim: int = 14
    state_dim: int = 32
    action_dim: int = 32
    action_horizon: int = 50
    adapt_to_pi: bool = True
    joint_flip: tuple[float, ...] = ARM_JOINT_FLIP * 2
    gripper_dims: tuple[int, ...] = GRIPPER_DIMS
    gripper: GripperConversion = field(default_factory=GripperConversion)
    delta_actions: bool = True
    delta_mask: tuple[bool, ...] = DELTA_MASK
    norm_eps: float = 1e-6  # openpi's (LeRobot: 1e-8)
    normalization: str = "zscore"  # "zscore" (pi0) or "quantile" (pi0.5: q01..q99 -> -1..1)
    # pi0.5: the normalized state as 256-bin integers in the prompt (finetune.transforms.prompt), openpi's format
    discrete_state_input: bool = False
    # how many of the normalized state's dims the prompt carries: openpi tokenizes the state before padding it
    # (TokenizePrompt runs before PadStatesAndActions), so its ALOHA prompts hold the 14 rig dims (for_model sets
    # rig_dim; LeRobot too since 2026-03). None: the whole padded vector (state_dim values: LeRobot's pi0.5 from
    # 2025-10 to 2026-03, and transforms.json files written before this field, which keep what they trained with)
    prompt_state_dims: int | None = None

    def __post_init__(self) -> None:
        for name in ("camera_slots", "joint_flip", "gripper_dims", "delta_mask"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "camera_map", tuple((str(a), str(b)) for a, b in self.camera_map))
        if len(self.joint_flip) != self.rig_dim or len(self.delta_mask) != self.rig_dim:
            raise ValueError(f"joint_flip and delta_mask need {self.rig_dim} entries (rig_dim)")
        if max(self.rig_dim, 1) > min(self.state_dim, self.action_dim):
            raise ValueError(f"rig_dim {self.rig_dim} does not fit the model's state/action dims "
                             f"({self.state_dim}/{self.action_dim})")
        if self.prompt_state_dims is not None and not 1 <= self.prompt_state_dims <= self.state_dim:
            raise ValueError(f"prompt_state_dims must be 1..state_dim ({self.state_dim}) or None, not "
                             f"{self.prompt_state_dims}")
        if self.normalization not in ("zscore", "quantile"):
            raise ValueError(f"normalization must be 'zscore' or 'quantile', not {self.normalization!r}")
        unknown = {slot for _, slot in self.camera_map} - set(self.camera_slots)
        if unknown:
            raise ValueError(f"camera_map names slots {sorted(unknown)} the model lacks; slots: {list(self.camera_slots)}")

    @staticmethod
    def for_model(model: Pi0Config, *, camera_map: tuple[tuple[str, str], ...] = DEFAULT_CAMERA_MAP,
                  adapt_to_pi: bool = True, delta_actions: bool = True, rig_dim: int = 14) -> "TransformConfig":
        """The chain for a model config: its camera slots, image size, padded dims and horizon; pi0.5 configs get
        quantile normalization and (their discrete_state_input) the state's rig dims in the prompt (openpi's)."""
        slots = set(model.camera_names)
        return TransformConfig(camera_slots=model.camera_names,
                               camera_map=tuple((c, s) for c, s in camera_map if s in slots),
                               image_size=model.vision.image_size, rig_dim=rig_dim, state_dim=model.state_dim,
                               action_dim=model.action_dim, action_horizon=model.action_horizon,
                               adapt_to_pi=adapt_to_pi, delta_actions=delta_actions,
                               normalization="quantile" if model.pi05 else "zscore",
                               discrete_state_input=model.discrete_state_input,
                               prompt_state_dims=rig_dim if model.discrete_state_input else None)

    @property
    def rig_cameras(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.camera_map)

    # -- JSON ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["camera_map"] = [list(p) for p in self.camera_map]
        return {"format": FORMAT, "version": VERSION, **d}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "TransformConfig":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a transform config (format {d.get('format')!r}, expected {FORMAT!r})")
        if int(d.get("version", 0)) > VERSION:
            raise ValueError(f"transform config version {d['version']} is newer than this code ({VERSION}); update")
        kw = {k: v for k, v in d.items() if k not in ("format", "version")}
        unknown = set(kw) - {f.name for f in dataclasses.fields(TransformConfig)}
        if unknown:
            raise ValueError(f"unknown keys in transform config: {sorted(unknown)}")
        kw["gripper"] = GripperConversion(**kw.get("gripper", {}))
        kw["camera_map"] = tuple(tuple(p) for p in kw.get("camera_map", DEFAULT_CAMERA_MAP))
        return TransformConfig(**kw)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TRANSFORMS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @staticmethod
    def load(folder_or_file: str | Path) -> "TransformConfig":
        p = Path(folder_or_file)
        return TransformConfig.from_json(json.loads((p / TRANSFORMS_FILE if p.is_dir() else p).read_text()))
