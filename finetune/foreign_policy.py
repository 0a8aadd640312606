"""Policies trained elsewhere, served like ours: a LeRobot-trained pi0 or pi0.5 folder and an openpi PyTorch pi0
checkpoint.

Both become a `ForeignPolicyRuntime` (a finetune.runtime.PolicyRuntime over their statistics and conventions, so
inference, real-time chunking and the server's protocol are the code our policies run) with the rig check and
the served metadata saying what is known about them and what is not.

LeRobot (PI0Policy.save_pretrained + its processors, 2025-09 onwards):
    config.json                      {"type": "pi0", input_features, output_features, normalization_mapping,
                                      chunk_size, n_action_steps, max_state_dim, max_action_dim, ...}
    model.safetensors                weights, `model.` prefix (finetune.checkpoint strips it)
    policy_preprocessor.json         {"name", "steps": [{"registry_name", "config", "state_file"?}, ...]}
    policy_preprocessor_step_<i>_normalizer_processor.safetensors      "observation.state.mean", ".std", ...
    policy_postprocessor.json        + policy_postprocessor_step_0_unnormalizer_processor.safetensors ("action.*")
  Conventions: finetune.foreign_transforms (normalization modes, adapt_to_pi_aloha, relative actions). Its cameras
  (`observation.images.<name>`) are mapped to the rig's by name, by the preprocessor's rename map, then by ALOHA
  aliases (top -> cam_high, left_wrist -> cam_left_wrist, ...), or as the operator says (camera_map).
  Older folders (normalization buffers inside model.safetensors) are refused with LeRobot's migration command.

LeRobot pi0.5 (PI05Policy, 2025-10 onwards): the same files with "type": "pi05"; the preprocessor normalizes
(QUANTILES by default: q01..q99 -> -1..1) and then `pi05_prepare_state_tokenizer_processor_step` writes the
normalized state into the prompt, openpi's "Task: ..., State: <256-bin ints>;\nAction: " (no "\n" step, no
adapt_to_pi_aloha). Which state dims the prompt holds changed: padded to max_state_dim (32) until 2026-03, the
feature's own dims (14, as openpi) since. The folder does not say its LeRobot version; a config.json or processor
with relative-actions fields (2026-04 onwards) reads as unpadded, anything else as padded (a folder saved between
2026-03-05 and 2026-04-01 would be read wrongly; the served conventions say which was assumed). MEM (visual /
proprioceptive memory, 2026-08) is a different network and refused.

openpi (scripts/train_pytorch.py): `<checkpoint_dir>/<step>/model.safetensors` (openpi's PI0Pytorch keys, which are
the hub layout), `assets/<asset_id>/norm_stats.json` (openpi's norm stats), no config.json: the operator names the
training configuration (`workbench serve PATH --config pi0_aloha_sim`, OPENPI_CONFIGS; or a preset / model variant
of ours: openpi's pi0 ALOHA conventions). pi0 trains with z-score normalization in openpi (quantiles are for pi0.5 /
pi0-FAST, models this code does not run). The output of openpi's JAX->PyTorch conversion script (config.json with
paligemma_variant, no "type") is read the same way, its model config from the file.

    runtime = load_foreign_policy("outputs/train/cube/checkpoints/020000/pretrained_model", rig=rig_config)
    runtime = load_foreign_policy("checkpoints/pi0_aloha_sim/run/30000", options=ForeignOptions(config="pi0_aloha_sim"))
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from drivers.arm import BIMANUAL_DOF
from drivers.cameras.base import ALOHA_CAMERAS
from finetune.lerobot_source import IMAGE_PREFIX
from finetune.model_config import Pi0Config
from finetune.normalize import NormStats, load_norm_stats
from finetune.policy_folder import POLICY_FILE, TOKENIZER_FILE, LoadedPolicy, PolicyFolderError
from finetune.rig_check import RigDescription, compare_rigs
from finetune.runtime import ACTION_BOUND_FLOOR, ACTION_BOUND_MARGIN, PolicyRuntime, RigMismatchError, action_bounds
from finetune.transforms import DEFAULT_CAMERA_MAP, PolicyTransforms, TransformConfig
from finetune.transforms.vectors import Chain, DeltaActions, PadTo

log = logging.getLogger(__name__)

LEROBOT, OPENPI = "lerobot", "openpi"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
STATE_KEY, ACTION_KEY = "observation.state", "action"
EMPTY_CAMERA = "empty_camera_"  # LeRobot's placeholder cameras (config.empty_cameras): no rig camera, masked
# LeRobot dataset camera names -> ALOHA rig cameras (the aloha_sim datasets call cam_high "top")
CAMERA_ALIASES: dict[str, str] = {"top": "cam_high", "high": "cam_high", "low": "cam_low",
                                  "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}
# processor steps that do not change values the model sees (batching, device moves, the tokenizer, which we
# replace by ours) or that we reproduce (normalizer, relative actions, the rename map for camera names)
_PRE_STEPS = {"rename_observations_processor", "to_batch_processor", "pi0_new_line_processor", "tokenizer_processor",
              "device_processor", "normalizer_processor", "relative_actions_processor",
              "pi05_prepare_state_tokenizer_processor_step"}
PI05_STATE_PROMPT_STEP = "pi05_prepare_state_tokenizer_processor_step"  # LeRobot's pi0.5: the state into the prompt
_POST_STEPS = {"unnormalizer_processor", "absolute_actions_processor", "device_processor"}
_OLD_NORM_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
_MIGRATE = ("python src/lerobot/processor/migrate_policy_normalization.py --pretrained-path FOLDER "
            "(in a LeRobot checkout)")


class ForeignPolicyError(PolicyFolderError):
    """A LeRobot or openpi checkpoint that cannot be served as it is; the message says what to do."""


@dataclass(frozen=True)
class ForeignOptions:
    """What the operator says about a checkpoint trained elsewhere (`workbench serve` flags)."""

    config: str | None = None  # --config: openpi config name, our preset or a Pi0Config variant
    tokenizer: str | None = None  # --tokenizer: a SentencePiece file (default: the folder's, else the hub's)
    asset_id: str | None = None  # --asset-id: which assets/<id>/norm_stats.json (openpi)
    camera_map: Mapping[str, str] | None = None  # --camera-map: policy camera -> rig camera

    @staticmethod
    def parse_camera_map(text: str | None) -> dict[str, str] | None:
        """"top=cam_high,wrist=cam_left_wrist" -> {"top": "cam_high", ...}."""
        if not text:
            return None
        out: dict[str, str] = {}
        for part in text.split(","):
            if part.strip():
                a, sep, b = part.partition("=")
                if not sep or not a.strip() or not b.strip():
                    raise ValueError(f"camera map {text!r}: use POLICY_CAMERA=RIG_CAMERA pairs, comma-separated")
                out[a.strip()] = b.strip()
        return out


@dataclass(frozen=True)
class OpenpiConfig:
    """One of openpi's pi0 ALOHA training configs (src/openpi/training/config.py), as far as serving needs it."""

    name: str
    model: str  # Pi0Config variant
    adapt_to_pi: bool = True  # LeRobotAlohaDataConfig's default
    delta_actions: bool = True  # use_delta_joint_actions
    cameras: tuple[str, ...] = tuple(c for c, _ in DEFAULT_CAMERA_MAP)
    default_prompt: str | None = None
    asset_id: str | None = None  # None: the dataset repo id (openpi's default), found under assets/

    @property
    def normalization(self) -> str:
        return "z-score"  # openpi: use_quantile_norm = model_type != PI0


OPENPI_CONFIGS: tuple[OpenpiConfig, ...] = (
    OpenpiConfig("pi0_aloha", "pi0", asset_id="trossen"),
    OpenpiConfig("pi0_aloha_towel", "pi0", default_prompt="fold the towel", asset_id="trossen"),
    OpenpiConfig("pi0_aloha_tupperware", "pi0", default_prompt="open the tupperware and put the food on the plate",
                 asset_id="trossen"),
    OpenpiConfig("pi0_aloha_pen_uncap", "pi0", default_prompt="uncap the pen", asset_id="trossen"),
    OpenpiConfig("pi0_aloha_sim", "pi0", delta_actions=False, cameras=("cam_high",), default_prompt="Transfer cube"),
)


def openpi_config(name: str) -> OpenpiConfig:
    """An openpi config by name; our training presets (pi0, pi0-lora, small, tiny) and Pi0Config variants name a
    model with openpi's pi0 ALOHA conventions (adapt_to_pi, delta joints: what our training uses too)."""
    from finetune.presets import NAMES as PRESET_NAMES, preset

    for c in OPENPI_CONFIGS:
        if c.name == name:
            return c
    if name in PRESET_NAMES:
        return OpenpiConfig(name, preset(name).model)
    if name in Pi0Config.variants():
        return OpenpiConfig(name, name)
    raise ForeignPolicyError(f"unknown configuration {name!r}; openpi's: {', '.join(c.name for c in OPENPI_CONFIGS)}; "
                             f"ours: {', '.join(PRESET_NAMES)}; model variants: {', '.join(Pi0Config.variants())}")


def model_variant(name: str) -> Pi0Config:
    """A model architecture by any configuration name openpi_config takes."""
    return Pi0Config.variant(openpi_config(name).model)


@dataclass(frozen=True)
class ForeignSource:
    """What was learned about a foreign policy: the served metadata and the rig check come from here."""

    layout: str  # LEROBOT | OPENPI
    folder: Path
    step: int | None
    rig_cameras: tuple[str, ...]  # the rig cameras the policy reads (ordered as its slots)
    camera_map: dict[str, str]  # policy camera -> rig camera
    conventions: dict[str, Any]
    task: str | None = None
    bounds: dict[str, Any] | None = None
    joint_count: int = BIMANUAL_DOF

    def rig_description(self) -> RigDescription:
        """The policy's side of the rig check: only its cameras (others on the rig are unused) and its joint
        count are known; joint names, control rate, backend and gripper constants are not."""
        return RigDescription(self.rig_cameras, joint_count=self.joint_count, camera_subset=True,
                              name=f"{self.layout} policy")


# ------------------------------------------------------------------------------------------------ detection
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ForeignPolicyError(f"{path}: not valid JSON ({e}); the file is damaged, copy it again") from None


def openpi_step_dir(folder: Path) -> Path | None:
    """`folder` itself when it holds model.safetensors, else its newest `<step>/` with one (openpi's checkpoint
    dir), else None."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file() or (folder / "model.safetensors.index.json").is_file():
        return folder
    steps = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and (p / MODEL_FILE).is_file()] \
        if folder.is_dir() else []
    return max(steps, key=lambda p: int(p.name)) if steps else None


def foreign_layout(folder: str | Path) -> str | None:
    """LEROBOT, OPENPI, or None (our policy folder, a replay folder, or anything else)."""
    folder = Path(folder)
    if (folder / POLICY_FILE).is_file() or (folder / "replay.json").is_file():
        return None
    if (folder / CONFIG_FILE).is_file():
        d = _read_json(folder / CONFIG_FILE)
        if not isinstance(d, Mapping) or "format" in d:
            return None
        if "type" in d:
            return LEROBOT
        if "paligemma_variant" in d or "action_expert_variant" in d:
            return OPENPI  # openpi's JAX -> PyTorch conversion output
        return None
    return OPENPI if openpi_step_dir(folder) is not None else None


# ------------------------------------------------------------------------------------------------ cameras
def map_cameras(policy_cams: Sequence[str], rig_cams: Sequence[str], *, explicit: Mapping[str, str] | None = None,
                renamed: Mapping[str, str] | None = None, source: str = "policy") -> dict[str, str]:
    """Policy camera -> rig camera: the operator's pair, else the same name, the name the preprocessor renamed
    from, or an ALOHA alias, whichever the rig has. LeRobot's empty_camera_<i> get none (masked, as there).
    Raises ForeignPolicyError naming both lists when a camera cannot be mapped."""
    explicit, renamed = dict(explicit or {}), dict(renamed or {})
    unknown = sorted(set(explicit) - set(policy_cams))
    if unknown:
        raise ForeignPolicyError(f"camera map names {unknown}, which {source} does not read; its cameras: "
                                 f"{list(policy_cams)}")
    out: dict[str, str] = {}
    unmapped: list[str] = []
    for cam in policy_cams:
        if cam in explicit:
            if explicit[cam] not in rig_cams:
                raise ForeignPolicyError(f"camera map {cam}={explicit[cam]}: the rig has no camera "
                                         f"{explicit[cam]!r}; rig cameras: {list(rig_cams)}")
            out[cam] = explicit[cam]
            continue
        if cam.startswith(EMPTY_CAMERA):
            continue
        candidates = [cam, renamed.get(cam), CAMERA_ALIASES.get(cam), CAMERA_ALIASES.get(renamed.get(cam, ""))]
        hit = next((c for c in candidates if c and c in rig_cams), None)
        if hit is None:
            unmapped.append(cam)
        else:
            out[cam] = hit
    if unmapped:
        raise ForeignPolicyError(
            f"cannot map {source}'s cameras {unmapped} to a rig camera: the policy reads {list(policy_cams)}, the "
            f"rig has {list(rig_cams)}; name the pairs: `workbench serve ... --camera-map "
            f"{','.join(f'{c}=RIG_CAMERA' for c in unmapped)}`")
    taken: dict[str, str] = {}
    for cam, rig_cam in out.items():
        if rig_cam in taken:
            raise ForeignPolicyError(f"{source}'s cameras {taken[rig_cam]!r} and {cam!r} both map to rig camera "
                                     f"{rig_cam!r}; name the pairs with --camera-map")
        taken[rig_cam] = cam
    return out


def _rig_cameras(rig: Any) -> tuple[str, ...]:
    return RigDescription.of(rig).cameras if rig is not None else ALOHA_CAMERAS


# ------------------------------------------------------------------------------------------------ tokenizer
def _tokenizer(folder: Path, options: ForeignOptions, cfg: Pi0Config) -> Any:
    """The operator's file, else a tokenizer.model in the folder, else PaliGemma's (finetune.tokenizer's sources);
    checked against the model (finetune.tokenizer.check_tokenizer_fits: PaliGemma's for the full-size vocabulary)."""
    from finetune.tokenizer import PromptTokenizer, TokenizerMismatch, check_tokenizer_fits

    try:
        if options.tokenizer:
            tok = PromptTokenizer(Path(options.tokenizer).expanduser(), max_len=cfg.max_token_len)
        elif (folder / TOKENIZER_FILE).is_file():
            tok = PromptTokenizer(folder / TOKENIZER_FILE, max_len=cfg.max_token_len)
        else:
            tok = PromptTokenizer.from_source(max_len=cfg.max_token_len)
        check_tokenizer_fits(tok.sp, cfg.vocab_size, tok.path)
    except (TokenizerMismatch, FileNotFoundError) as e:
        raise ForeignPolicyError(f"{e}; pass the tokenizer this policy was trained with: --tokenizer PATH") from None
    except Exception as e:  # noqa: BLE001 - no source reachable (offline, gated): one message saying what to do
        raise ForeignPolicyError(f"{folder} ships no {TOKENIZER_FILE} and PaliGemma's could not be loaded: {e}\n"
                                 "or pass one with --tokenizer PATH") from None
    return tok


# ------------------------------------------------------------------------------------------------ LeRobot
def _load_safetensors_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{"observation.state.mean": t, ...} -> {"observation.state": {"mean": array, ...}}."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ForeignPolicyError(f"{path.parent}: the processor names statistics file {path.name}, which is missing; "
                                 "copy the whole checkpoint folder (LeRobot writes it with the processor json)")
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ForeignPolicyError(f"{path}: not a readable safetensors file ({e}); copy it again") from None
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in flat.items():
        feat, _, stat = key.rpartition(".")
        out.setdefault(feat, {})[stat] = np.asarray(arr, dtype=np.float64)
    return out


@dataclass(frozen=True)
class _Pipeline:
    steps: list[dict[str, Any]]
    path: Path

    @staticmethod
    def read(folder: Path, name: str, allowed: set[str]) -> "_Pipeline":
        path = folder / name
        if not path.is_file():
            raise ForeignPolicyError(_no_processor_message(folder, name))
        d = _read_json(path)
        steps = d.get("steps") if isinstance(d, Mapping) else None
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise ForeignPolicyError(f"{path}: expected LeRobot's processor layout {{\"name\", \"steps\": [...]}}")
        unknown = [s.get("registry_name") or s.get("class") for s in steps
                   if (s.get("registry_name") or s.get("class")) not in allowed]
        if unknown:
            raise ForeignPolicyError(f"{path}: processor steps {unknown} change what the model sees in ways this "
                                     f"server does not reproduce (supported: {sorted(allowed)})")
        return _Pipeline([dict(s) for s in steps], path)

    def find(self, name: str, *, required: bool = False) -> dict[str, Any] | None:
        found = [s for s in self.steps if s.get("registry_name") == name]
        if len(found) > 1:
            raise ForeignPolicyError(f"{self.path}: {len(found)} {name} steps; one is supported")
        if not found and required:
            raise ForeignPolicyError(f"{self.path}: no {name} step, so no statistics to (un)normalize with")
        return found[0] if found else None

    def stats(self, step: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        name = step.get("state_file")
        if not name:
            raise ForeignPolicyError(f"{self.path}: its {step.get('registry_name')} step names no state_file "
                                     "(the statistics); re-save the policy with its dataset's statistics")
        return _load_safetensors_stats(self.path.parent / str(name))


def _no_processor_message(folder: Path, name: str) -> str:
    keys: list[str] = []
    try:
        from finetune.checkpoint import read_safetensors_header

        keys = list(read_safetensors_header(folder / MODEL_FILE)[0]) if (folder / MODEL_FILE).is_file() else []
    except Exception:  # noqa: BLE001 - only for the wording of the message
        pass
    if any(k.startswith(_OLD_NORM_PREFIXES) for k in keys):
        return (f"{folder} is a LeRobot policy from before its processor pipeline (2025-09): the statistics are "
                f"buffers inside {MODEL_FILE} and there is no {name}. Migrate it with LeRobot's script: {_MIGRATE}")
    return (f"{folder} has a LeRobot config.json but no {name} (the normalization statistics); copy the whole "
            f"checkpoint folder (pretrained_model/), which LeRobot saves with {PREPROCESSOR_FILE} and "
            f"{POSTPROCESSOR_FILE}")


def _features(d: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(d, Mapping):
        return {}
    out = {}
    for k, v in d.items():
        if not isinstance(v, Mapping) or "type" not in v:
            raise ForeignPolicyError(f"{path}: feature {k!r} lacks its type/shape ({v!r})")
        out[str(k)] = {"type": str(v["type"]).upper(), "shape": [int(x) for x in v.get("shape") or ()]}
    return out


def _feature_norm(stats: Mapping[str, Mapping[str, np.ndarray]], key: str, mode: str, eps: float, dim: int,
                  path: Path):
    from finetune.foreign_transforms import FeatureNorm, ForeignStatsError

    if mode != "IDENTITY" and key not in stats:
        raise ForeignPolicyError(f"{path}: no statistics for {key!r} ({mode} normalization needs them); the file "
                                 f"has {sorted(stats)}")
    try:
        return FeatureNorm.from_stats(mode, stats.get(key, {}), eps, dim, f"{path.name}: {key}")
    except ForeignStatsError as e:
        raise ForeignPolicyError(str(e)) from None


def _lerobot_model_config(d: Mapping[str, Any], slots: tuple[str, ...], options: ForeignOptions) -> Pi0Config:
    """The architecture from config.json (gemma variants, SigLIP So400m; pi0.5 for "type": "pi05"), or the
    operator's variant (of the same kind); the dims, horizon, camera slots, token length and steps from
    config.json either way (the weights were saved so)."""
    from finetune.checkpoint import KIND_NAMES
    from finetune.model_config import PI05_TOKEN_LEN, GemmaConfig

    kind = "pi05" if d.get("type") == "pi05" else "pi0"
    if options.config:
        base = model_variant(options.config)
        if base.kind != kind:
            examples = "pi05_tiny, pi05_small, pi05" if kind == "pi05" else "tiny, small, pi0"
            raise ForeignPolicyError(
                f"--config {options.config} names a {KIND_NAMES[base.kind]} model ({base.name}), but this LeRobot "
                f"folder holds a {KIND_NAMES[kind]} policy (config.json \"type\": {d.get('type')!r}); name a "
                f"{KIND_NAMES[kind]} variant (e.g. {examples}) or leave --config out for the full-size model")
    else:
        res = d.get("image_resolution") or d.get("resize_imgs_with_padding") or (224, 224)
        if list(res) != [224, 224]:
            raise ForeignPolicyError(f"image resolution {list(res)}: this pi0 runs 224x224 SigLIP inputs only")
        try:
            base = Pi0Config(name=kind, paligemma=GemmaConfig.variant(str(d.get("paligemma_variant", "gemma_2b"))),
                             expert=GemmaConfig.variant(str(d.get("action_expert_variant", "gemma_300m"))),
                             max_token_len=PI05_TOKEN_LEN if kind == "pi05" else 48, pi05=kind == "pi05",
                             discrete_state_input=kind == "pi05")
        except ValueError as e:
            raise ForeignPolicyError(f"config.json: {e}") from None
        if d.get("dtype") in ("bfloat16", "float32"):
            base = base.replace(dtype=str(d["dtype"]))
    return base.replace(
        camera_names=slots,
        state_dim=int(d.get("max_state_dim", base.state_dim)), action_dim=int(d.get("max_action_dim", base.action_dim)),
        action_horizon=int(d.get("chunk_size", base.action_horizon)),
        max_token_len=int(d.get("tokenizer_max_length", base.max_token_len)),
        num_steps=int(d.get("num_inference_steps", d.get("num_steps", base.num_steps))),
        time_min_period=float(d.get("min_period", base.time_min_period)),
        time_max_period=float(d.get("max_period", base.time_max_period)))


def _step_of(folder: Path) -> int | None:
    """LeRobot saves checkpoints/<step>/pretrained_model; openpi <checkpoint_dir>/<step>."""
    for p in (folder, folder.parent):
        if p.name.isdigit():
            return int(p.name)
    return None


@dataclass(frozen=True)
class _Read:
    """What a layout's reader found: where the weights are, the model config, the transform chain's config and,
    for LeRobot, its explicit chain (None: our openpi chain built from `tcfg` and `stats`)."""

    weights: Path
    cfg: Pi0Config
    tcfg: TransformConfig
    chain: Chain | None
    stats: dict[str, NormStats]
    source: ForeignSource


def _read_lerobot(folder: Path, options: ForeignOptions, rig_cams: Sequence[str]) -> _Read:
    from finetune.foreign_transforms import LeRobotAlohaAdapt, LeRobotNormalize, lerobot_relative_mask

    cfg_path = folder / CONFIG_FILE
    d = _read_json(cfg_path)
    if d.get("type") not in ("pi0", "pi05"):
        raise ForeignPolicyError(f"{folder} is a LeRobot {d.get('type')!r} policy; pi0 and pi0.5 are served here")
    pi05 = d.get("type") == "pi05"
    memory = [k for k in ("use_visual_memory", "use_proprioceptive_memory") if d.get(k)]
    if memory:
        raise ForeignPolicyError(f"{cfg_path}: {' and '.join(memory)} set: LeRobot's pi0.5 with MEM (memory frames, "
                                 "a state projection) is a different network; only the plain pi0.5 is served here")
    if int(d.get("n_obs_steps", 1)) != 1:
        raise ForeignPolicyError(f"{cfg_path}: n_obs_steps {d['n_obs_steps']}; pi0 reads one observation")
    if d.get("use_delta_joint_actions_aloha"):
        raise ForeignPolicyError(f"{cfg_path}: use_delta_joint_actions_aloha is set, which LeRobot never "
                                 "implemented (its config refuses it); this folder was not trained by LeRobot as is")
    pre = _Pipeline.read(folder, PREPROCESSOR_FILE, _PRE_STEPS)
    post = _Pipeline.read(folder, POSTPROCESSOR_FILE, _POST_STEPS)
    norm_step, unnorm_step = pre.find("normalizer_processor", required=True), post.find("unnormalizer_processor",
                                                                                        required=True)
    ncfg, ucfg = dict(norm_step.get("config") or {}), dict(unnorm_step.get("config") or {})
    inputs = _features(d.get("input_features"), cfg_path) or _features(ncfg.get("features"), pre.path)
    outputs = _features(d.get("output_features"), cfg_path) or _features(ucfg.get("features"), post.path)
    if STATE_KEY not in inputs or ACTION_KEY not in outputs:
        raise ForeignPolicyError(f"{cfg_path}: needs input feature {STATE_KEY!r} and output feature {ACTION_KEY!r} "
                                 f"(has {sorted(inputs)} -> {sorted(outputs)})")
    state_dim, action_dim = (int(np.prod(inputs[STATE_KEY]["shape"])), int(np.prod(outputs[ACTION_KEY]["shape"])))
    if (state_dim, action_dim) != (BIMANUAL_DOF, BIMANUAL_DOF):
        raise ForeignPolicyError(f"{folder}: state {state_dim} / action {action_dim} dims; this rig has "
                                 f"{BIMANUAL_DOF} joints (two ALOHA arms)")

    # normalization: the processors' own norm maps (what ran), state in through the preprocessor's statistics,
    # actions out through the postprocessor's
    def mode(cfg_: Mapping[str, Any], ftype: str, path: Path) -> str:
        nm = cfg_.get("norm_map") or d.get("normalization_mapping") or {}
        if not isinstance(nm, Mapping):
            raise ForeignPolicyError(f"{path}: norm_map must map feature types to modes, got {nm!r}")
        return str(nm.get(ftype, "IDENTITY")).upper()

    state_mode = mode(ncfg, "STATE", pre.path)
    keys = ncfg.get("normalize_observation_keys")
    if keys is not None and STATE_KEY not in keys:
        state_mode = "IDENTITY"
    action_mode = mode(ucfg, "ACTION", post.path)
    out_stats = post.stats(unnorm_step) if action_mode != "IDENTITY" else {}
    state_norm = _feature_norm(pre.stats(norm_step) if state_mode != "IDENTITY" else {}, STATE_KEY, state_mode,
                               float(ncfg.get("eps", 1e-8)), state_dim, pre.path)
    action_norm = _feature_norm(out_stats, ACTION_KEY, action_mode, float(ucfg.get("eps", 1e-8)), action_dim,
                                post.path)
    if state_norm.mode == "MEAN_STD" and np.any(state_norm.scale_out < 1e-3):
        log.warning("%s: state dims %s have std < 1e-3: LeRobot divides by std + %g there, so a small deviation "
                    "from the training mean becomes a large input", folder,
                    np.flatnonzero(state_norm.scale_out < 1e-3).tolist(), float(ncfg.get("eps", 1e-8)))

    # relative actions (LeRobot 2026) and adapt_to_pi_aloha (its 2025-09 pipeline)
    rel_step = pre.find("relative_actions_processor")
    rel_cfg = dict((rel_step or {}).get("config") or {})
    relative = bool(rel_cfg.get("enabled", d.get("use_relative_actions", False)))
    mask = lerobot_relative_mask(action_dim, rel_cfg.get("action_names", d.get("action_feature_names")),
                                 rel_cfg.get("exclude_joints", d.get("relative_exclude_joints", ["gripper"]))) \
        if relative else None
    absolute = post.find("absolute_actions_processor")
    if relative and not (absolute and dict(absolute.get("config") or {}).get("enabled", False)):
        raise ForeignPolicyError(f"{post.path}: relative actions are enabled in the preprocessor but not turned back "
                                 "to absolute in the postprocessor; the folder's processors do not match")
    adapt = bool(d.get("adapt_to_pi_aloha", False))
    if adapt and relative:
        raise ForeignPolicyError(f"{cfg_path}: adapt_to_pi_aloha together with relative actions: no LeRobot version "
                                 "had both, the order is unknown")

    slots, renamed = _lerobot_cameras(inputs, d, pre, cfg_path)
    cam_map = map_cameras(slots, rig_cams, explicit=options.camera_map, renamed=renamed, source=f"policy {folder}")

    cfg = _lerobot_model_config(d, tuple(slots), options)
    prompt_dims, prompt_note = _pi05_prompt_state(d, pre, state_dim, cfg) if pi05 else (None, None)
    tcfg = TransformConfig(camera_slots=cfg.camera_names, camera_map=tuple((r, s) for s, r in cam_map.items()),
                           image_size=cfg.vision.image_size, rig_dim=BIMANUAL_DOF, state_dim=cfg.state_dim,
                           action_dim=cfg.action_dim, action_horizon=cfg.action_horizon, adapt_to_pi=False,
                           delta_actions=False, norm_eps=float(ncfg.get("eps", 1e-8)),
                           normalization="quantile" if pi05 else "zscore", discrete_state_input=pi05,
                           prompt_state_dims=prompt_dims)
    steps: list[Any] = [DeltaActions(mask)] if mask is not None else []
    steps.append(LeRobotNormalize(state_norm, action_norm))
    if adapt:
        steps.append(LeRobotAlohaAdapt(BIMANUAL_DOF))
    steps.append(PadTo(BIMANUAL_DOF, cfg.state_dim, cfg.action_dim))
    stats = {k: s for k, s in (("state", state_norm.as_norm_stats()), ("actions", action_norm.as_norm_stats())) if s}
    conventions: dict[str, Any] = {
        "source": "lerobot", "normalization": {"state": state_norm.mode, "actions": action_norm.mode},
        "eps": float(ncfg.get("eps", 1e-8)), "adapt_to_pi_aloha": adapt,
        "relative_actions": list(mask) if mask is not None else None,
        "chunk_size": cfg.action_horizon, "n_action_steps": int(d.get("n_action_steps", cfg.action_horizon)),
        "camera_map": dict(cam_map)}
    if prompt_note is not None:
        conventions["state_in_prompt"] = prompt_note
    if adapt:
        conventions["adapt_to_pi_aloha_order"] = ("normalize, then flip dims 1,2,8,9 and convert grippers 6,13 "
                                                  "(state: finger -> angle over [0.4, 1.5] rad; actions: angle -> "
                                                  "joint over [-0.6213, 1.4910] rad), as LeRobot's pipeline does")
    bounds = _raw_action_bounds(out_stats.get(ACTION_KEY, {})) if mask is None else None
    src = ForeignSource(LEROBOT, folder, _step_of(folder), tuple(cam_map[s] for s in slots if s in cam_map),
                        dict(cam_map), conventions, None, bounds)
    return _Read(folder, cfg, tcfg, Chain(tuple(steps)), stats, src)


def _pi05_prompt_state(d: Mapping[str, Any], pre: _Pipeline, state_dim: int, cfg: Pi0Config
                       ) -> tuple[int | None, str]:
    """(TransformConfig.prompt_state_dims, what the served conventions say) for a LeRobot pi0.5 folder: its
    preprocessor's state-prompt step must be there and keep the state in the prompt; unpadded (the feature's dims)
    for folders with LeRobot's relative-actions fields (2026-04 onwards), padded to max_state_dim before."""
    step = pre.find(PI05_STATE_PROMPT_STEP)
    if step is None:
        raise ForeignPolicyError(f"{pre.path}: no {PI05_STATE_PROMPT_STEP} step, which LeRobot's pi0.5 uses to write "
                                 "the normalized state into the prompt; the folder's processors are not pi0.5's")
    scfg = dict(step.get("config") or {})
    if not scfg.get("include_state_in_prompt", True):
        raise ForeignPolicyError(f"{pre.path}: its {PI05_STATE_PROMPT_STEP} leaves the state out of the prompt "
                                 "(LeRobot's MEM variant); only the plain pi0.5 is served here")
    names = [s.get("registry_name") for s in pre.steps]
    if names.index(PI05_STATE_PROMPT_STEP) < names.index("normalizer_processor"):
        raise ForeignPolicyError(f"{pre.path}: the state is written into the prompt before it is normalized; "
                                 "LeRobot's pi0.5 normalizes first (its bins cover [-1, 1])")
    padded_to = int(scfg.get("max_state_dim", cfg.state_dim))
    unpadded = "use_relative_actions" in d or pre.find("relative_actions_processor") is not None
    if unpadded:
        return state_dim, (f"{state_dim} dims, unpadded (LeRobot 2026-03 onwards, as openpi; assumed from its "
                           "relative-actions fields)")
    if padded_to != cfg.state_dim:
        raise ForeignPolicyError(f"{pre.path}: {PI05_STATE_PROMPT_STEP} pads the state to {padded_to}, the model's "
                                 f"max_state_dim is {cfg.state_dim}")
    return None, (f"{padded_to} dims, padded (LeRobot 2025-10 to 2026-03; assumed: its config has no "
                  "relative-actions fields)")


def _lerobot_cameras(inputs: Mapping[str, Any], d: Mapping[str, Any], pre: _Pipeline, cfg_path: Path
                     ) -> tuple[list[str], dict[str, str]]:
    """The model's camera slots (VISUAL features in config order, then LeRobot's empty cameras) and, from the
    preprocessor's rename map, which dataset camera each slot was renamed from."""
    visual = [k for k, v in inputs.items() if v["type"] == "VISUAL"]
    slots = [k[len(IMAGE_PREFIX):] if k.startswith(IMAGE_PREFIX) else k for k in visual]
    empty = [f"{EMPTY_CAMERA}{i}" for i in range(int(d.get("empty_cameras", 0) or 0))]
    slots += [e for e in empty if e not in slots]
    if not slots:
        raise ForeignPolicyError(f"{cfg_path}: no VISUAL input features (observation.images.*)")
    rename_step = pre.find("rename_observations_processor")
    rename = dict(dict((rename_step or {}).get("config") or {}).get("rename_map") or {})
    renamed = {str(v)[len(IMAGE_PREFIX):]: str(k)[len(IMAGE_PREFIX):] for k, v in rename.items()
               if str(k).startswith(IMAGE_PREFIX) and str(v).startswith(IMAGE_PREFIX)}
    return slots, renamed


def _raw_action_bounds(astats: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """The chunk check's trained range (finetune.runtime.action_bounds' format) from statistics in rig units:
    q01..q99, else min..max, widened the same way; None without them."""
    lo, hi = next(((astats[a], astats[b]) for a, b in (("q01", "q99"), ("min", "max")) if a in astats and b in astats),
                  (None, None))
    if lo is None or not (lo.size == hi.size == BIMANUAL_DOF) or not np.all(np.isfinite(lo) & np.isfinite(hi)):
        return None
    widen = np.maximum(ACTION_BOUND_MARGIN * (hi - lo), ACTION_BOUND_FLOOR)
    return {"lo": (lo - widen).tolist(), "hi": (hi + widen).tolist(), "relative": [False] * BIMANUAL_DOF,
            "margin": ACTION_BOUND_MARGIN, "floor": ACTION_BOUND_FLOOR}


# ------------------------------------------------------------------------------------------------ openpi
def _openpi_norm_stats(folder: Path, ckpt: Path, entry: OpenpiConfig, asset_id: str | None
                       ) -> tuple[str, dict[str, NormStats]]:
    """assets/<asset_id>/norm_stats.json (asset ids may contain '/': openpi's default is the dataset repo id)."""
    roots = [p / "assets" for p in dict.fromkeys((ckpt, folder)) if (p / "assets").is_dir()]
    found = {str(f.parent.relative_to(r)): f for r in roots for f in sorted(r.rglob("norm_stats.json"))}
    want = asset_id or entry.asset_id
    if want is not None and want in found:
        path = found[want]
    elif asset_id is not None:
        raise ForeignPolicyError(f"{ckpt}: no assets/{asset_id}/norm_stats.json; found: {sorted(found) or 'none'}")
    elif len(found) == 1:
        want, path = next(iter(found.items()))
    elif not found:
        raise ForeignPolicyError(f"{ckpt} has no assets/<asset_id>/norm_stats.json (openpi's train_pytorch.py writes "
                                 "the training statistics there); copy the run's assets/ folder next to "
                                 f"{MODEL_FILE}, or compute them with openpi's scripts/compute_norm_stats.py")
    else:
        raise ForeignPolicyError(f"{ckpt} holds statistics for several assets {sorted(found)}: say which with "
                                 "--asset-id ID")
    try:
        stats = load_norm_stats(path)
    except (ValueError, KeyError, TypeError) as e:
        raise ForeignPolicyError(f"{path}: not openpi's norm stats layout {{\"norm_stats\": {{\"state\": "
                                 f"{{\"mean\", \"std\", ...}}, \"actions\": ...}}}} ({type(e).__name__}: "
                                 f"{e})") from None
    for key in ("state", "actions"):
        s = stats.get(key)
        if s is None:
            raise ForeignPolicyError(f"{path}: no {key!r} statistics (has {sorted(stats)})")
        n = s.mean.shape[-1] if s.mean.ndim else 0
        if s.mean.ndim != 1 or n < BIMANUAL_DOF:
            raise ForeignPolicyError(f"{path}: {key} statistics have shape {list(s.mean.shape)}, need at least "
                                     f"{BIMANUAL_DOF} dims")
        bad = np.flatnonzero(~np.isfinite(s.mean[:BIMANUAL_DOF]) | ~np.isfinite(s.std[:BIMANUAL_DOF]))
        if bad.size:
            raise ForeignPolicyError(f"{path}: {key} statistics are not finite at dims {bad.tolist()}")
        if np.any(s.std < 0):
            raise ForeignPolicyError(f"{path}: {key} std is negative at dims {np.flatnonzero(s.std < 0).tolist()}")
    return want, stats


def _read_openpi(folder: Path, options: ForeignOptions, rig_cams: Sequence[str]) -> _Read:
    from finetune.checkpoint import read_safetensors_header

    ckpt = folder if (folder / CONFIG_FILE).is_file() else openpi_step_dir(folder)
    if ckpt is None:
        raise ForeignPolicyError(f"{folder}: no {MODEL_FILE} (nor <step>/{MODEL_FILE})")
    if not options.config:
        raise ForeignPolicyError(
            f"{ckpt} is an openpi checkpoint, which does not say how it was trained: name its training "
            f"configuration with --config NAME (openpi: {', '.join(c.name for c in OPENPI_CONFIGS)}; or one of ours, "
            "e.g. pi0: openpi's pi0 ALOHA conventions)")
    entry = openpi_config(options.config)
    if (ckpt / MODEL_FILE).is_file():
        keys = read_safetensors_header(ckpt / MODEL_FILE)[0]
        if any(k.endswith("time_mlp_in.weight") and "action_" not in k for k in keys):
            raise ForeignPolicyError(f"{ckpt} is a pi0.5 checkpoint (time_mlp_in, adaRMS): openpi's pi0.5 conventions "
                                     "are not reproduced here (LeRobot-trained pi0.5 folders are served)")
    names_openpi_config = options.config in {c.name for c in OPENPI_CONFIGS}
    if (ckpt / CONFIG_FILE).is_file() and names_openpi_config:  # a conversion's config.json: its architecture
        try:
            cfg = Pi0Config.from_dict(_read_json(ckpt / CONFIG_FILE))
        except ValueError as e:
            raise ForeignPolicyError(f"{ckpt / CONFIG_FILE}: {e}") from None
    else:  # no config.json, or the operator named an architecture (a preset or model variant of ours): it wins
        cfg = Pi0Config.variant(entry.model)
    asset, stats = _openpi_norm_stats(folder, ckpt, entry, options.asset_id)
    cam_map = map_cameras(entry.cameras, rig_cams, explicit=options.camera_map, source=f"openpi config {entry.name}")
    slot_of = dict(DEFAULT_CAMERA_MAP)
    tcfg = TransformConfig.for_model(cfg, camera_map=tuple((cam_map[c], slot_of[c]) for c in entry.cameras),
                                     adapt_to_pi=entry.adapt_to_pi, delta_actions=entry.delta_actions,
                                     rig_dim=BIMANUAL_DOF)
    conventions = {"source": "openpi", "config": entry.name, "asset_id": asset, "normalization": entry.normalization,
                   "eps": tcfg.norm_eps, "adapt_to_pi": entry.adapt_to_pi, "delta_joint_actions": entry.delta_actions,
                   "chunk_size": cfg.action_horizon, "camera_map": dict(cam_map)}
    src = ForeignSource(OPENPI, ckpt, _step_of(ckpt), tuple(cam_map[c] for c in entry.cameras), dict(cam_map),
                        conventions, entry.default_prompt, action_bounds(tcfg, stats.get("actions")))
    return _Read(ckpt, cfg, tcfg, None, stats, src)


# ------------------------------------------------------------------------------------------------ runtime
@dataclass
class ForeignPolicyRuntime(PolicyRuntime):
    """A PolicyRuntime over a LeRobot or openpi checkpoint: its cameras are the mapped rig cameras, its metadata
    says where it comes from, the conventions applied and what is unknown about its rig."""

    foreign: ForeignSource | None = field(default=None)

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.foreign.rig_cameras if self.foreign else super().cameras

    @property
    def training_task(self) -> str | None:
        return self.foreign.task if self.foreign else None

    def metadata(self) -> dict[str, Any]:
        f = self.foreign
        assert f is not None
        from finetune.checkpoint import KIND_NAMES

        return {"policy": str(f.folder), "step": f.step, "model": self.policy.model.config.name,
                "policy_type": f"{f.layout} {KIND_NAMES[self.policy.model.config.kind]}",
                "cameras": list(f.rig_cameras),
                "action_horizon": self.action_shape[0], "action_dim": self.action_shape[1],
                "rig": None, "control_hz": None, "backend": None, "gripper_set": None, "gripper": None,
                "joint_names": None, "joint_count": f.joint_count, "camera_subset": True,
                "rtc": self.rtc_mode, "rtc_max_delay": self.rtc_max_delay, "task": f.task,
                "action_bounds": f.bounds, "conventions": f.conventions}


def load_foreign_policy(folder: str | Path, device: torch.device | str = "cpu", *, rig: Any = None,
                        num_steps: int | None = None, options: ForeignOptions | None = None,
                        dtype: str | None = None) -> ForeignPolicyRuntime:
    """A LeRobot pi0 / pi0.5 folder or an openpi checkpoint -> a runtime; with `rig`, refuses one whose cameras
    the rig lacks and logs what the check could not cover (joint names, control rate, backend, gripper
    constants)."""
    from finetune.checkpoint import load_pi0
    from finetune.foreign_transforms import ChainTransforms

    folder = Path(folder)
    options = options or ForeignOptions()
    layout = foreign_layout(folder)
    rig_cams = _rig_cameras(rig)
    if layout == LEROBOT:
        read = _read_lerobot(folder, options, rig_cams)
    elif layout == OPENPI:
        read = _read_openpi(folder, options, rig_cams)
    else:
        raise ForeignPolicyError(f"{folder} is neither a LeRobot pi0 / pi0.5 folder (config.json with \"type\": "
                                 "\"pi0\" or \"pi05\") "
                                 f"nor an openpi checkpoint (<step>/{MODEL_FILE} + assets/)")
    src, cfg = read.source, read.cfg
    if rig is not None:
        check = compare_rigs(src.rig_description(), rig, allow_sim_policy=None, policy=str(folder))
        if check.differences:
            raise RigMismatchError(f"{layout} policy {folder} does not fit rig {getattr(rig, 'name', '')!r}:\n  "
                                   + "\n  ".join(check.differences)
                                   + (f"\n(not checked: {'; '.join(check.unchecked)})" if check.unchecked else ""))
        log.warning("%s", check.summary())  # always something unchecked: joint names, rate, backend, gripper
    tok = _tokenizer(read.weights, options, cfg)
    transforms = ChainTransforms(read.tcfg, read.chain, read.stats, tok) if read.chain is not None \
        else PolicyTransforms(read.tcfg, read.stats, tok)
    device = torch.device(device)
    model = load_pi0(read.weights, config=cfg, dtype=dtype, device=device).eval()
    manifest = {"format": f"{layout} checkpoint", "step": src.step, "model": cfg.name, "rtc_max_delay": 0}
    log.info("serving %s policy %s: %s", layout, folder, json.dumps(src.conventions))
    return ForeignPolicyRuntime(LoadedPolicy(src.folder, model, manifest, tok, transforms), device, None, num_steps,
                                foreign=src)


__all__ = ["CAMERA_ALIASES", "ForeignOptions", "ForeignPolicyError", "ForeignPolicyRuntime", "ForeignSource",
           "LEROBOT", "OPENPI", "OPENPI_CONFIGS", "OpenpiConfig", "foreign_layout", "load_foreign_policy",
           "map_cameras", "model_variant", "openpi_config", "openpi_step_dir"]
