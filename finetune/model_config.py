"""pi0 / pi0.5 model configuration: frozen dataclasses with named variants.

Every variant (the full 3.5 B pi0 and pi0.5 and the tiny test models) runs the same code; only these numbers change.
`pi05=True` selects pi0.5 (finetune.model.pi05: adaptive RMSNorm in the action expert conditioned on the flow time,
no state token, the state discretized into a 200-token prompt, quantile normalization).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

PALIGEMMA_VOCAB_SIZE = 257152
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma weight set. pi0 pairs two of these; they must agree on heads and head_dim (shared attention)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6

    @staticmethod
    def variant(name: str) -> "GemmaConfig":
        try:
            return _GEMMA_VARIANTS[name]
        except KeyError:
            raise ValueError(f"unknown Gemma variant {name!r}; known: {sorted(_GEMMA_VARIANTS)}") from None


_GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    # openpi's test model ("dummy")
    "dummy": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    # our unit-test models: two layers, and an expert narrower than the VLM like the real pair (2048 vs 1024)
    "tiny": GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    "tiny_expert": GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16),
    # a CPU closed-loop model: big enough to memorize a few demonstrations in minutes (workbench closed-loop)
    "small": GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32),
    "small_expert": GemmaConfig(width=96, depth=4, mlp_dim=384, num_heads=4, num_kv_heads=1, head_dim=32),
}


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP vision tower (no pooling head; tokens = (image_size / patch_size)^2)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @staticmethod
    def variant(name: str) -> "SiglipConfig":
        try:
            return _SIGLIP_VARIANTS[name]
        except KeyError:
            raise ValueError(f"unknown SigLIP variant {name!r}; known: {sorted(_SIGLIP_VARIANTS)}") from None


_SIGLIP_VARIANTS: dict[str, SiglipConfig] = {
    "so400m": SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16),
    # same 224 px / 14 px patches (256 tokens per camera) as the real tower, tiny width and depth
    "tiny_224": SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2),
    # 56 px images -> 16 tokens per camera: fast unit tests
    "tiny_56": SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, image_size=56),
    # the CPU closed loop's tower: 14 px patches like the real one (7 px patches quadruple the tokens and cost 2.3x
    # the training time for the same parameters: 44 vs 103 samples/s on a 2-core VM)
    "small_56": SiglipConfig(width=64, depth=3, mlp_dim=256, num_heads=4, image_size=56),
}


@dataclass(frozen=True)
class Pi0Config:
    """Whole pi0 policy network.

    `loss_action_dims`: None averages the flow-matching MSE over all padded dims (openpi); an int averages over
    the first n dims only (LeRobot). `dtype` is the weight/activation dtype; norms and the vision patch/position
    embeddings stay fp32 whatever it is.

    `pi05`: the pi0.5 network (no state token; the expert's norms are adaptive, conditioned on the flow time).
    `discrete_state_input` (pi0.5 only): the normalized state is written into the prompt as 256-bin integers
    (openpi's `pi05_base`); False leaves it out of the prompt (openpi's `pi05_libero`), so the model sees no state.
    """

    name: str = "pi0"
    paligemma: GemmaConfig = field(default_factory=lambda: GemmaConfig.variant("gemma_2b"))
    expert: GemmaConfig = field(default_factory=lambda: GemmaConfig.variant("gemma_300m"))
    vision: SiglipConfig = field(default_factory=lambda: SiglipConfig.variant("so400m"))
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    camera_names: tuple[str, ...] = OPENPI_CAMERAS
    action_dim: int = 32
    state_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    num_steps: int = 10
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    dtype: str = "bfloat16"
    attention: str = "sdpa"  # "sdpa", "eager" (explicit fp32 logits) or "flex" (FlexAttention block mask)
    loss_action_dims: int | None = None
    pi05: bool = False
    discrete_state_input: bool = False

    def __post_init__(self) -> None:
        p, e = self.paligemma, self.expert
        if (p.num_heads, p.num_kv_heads, p.head_dim, p.depth) != (e.num_heads, e.num_kv_heads, e.head_dim, e.depth):
            raise ValueError(
                "paligemma and expert must share depth, num_heads, num_kv_heads and head_dim (one attention per "
                f"layer over both): got {p} and {e}"
            )
        if p.num_heads % p.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.vision.width % self.vision.num_heads:
            raise ValueError("vision width must be a multiple of its num_heads")
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}")
        if self.attention not in ("sdpa", "eager", "flex"):
            raise ValueError(f"attention must be 'sdpa', 'eager' or 'flex', got {self.attention!r}")
        if not self.camera_names:
            raise ValueError("at least one camera slot is required")
        if self.discrete_state_input and not self.pi05:
            raise ValueError("discrete_state_input is a pi0.5 option (pi0 feeds the state as a token of its own); "
                             "set pi05=True or leave it False")
        object.__setattr__(self, "camera_names", tuple(self.camera_names))

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    @property
    def prefix_len(self) -> int:
        return self.num_cameras * self.vision.num_patches + self.max_token_len

    @property
    def suffix_len(self) -> int:
        """pi0: state token + action tokens; pi0.5: action tokens only."""
        return self.action_horizon + (0 if self.pi05 else 1)

    @property
    def kind(self) -> str:
        """"pi0" or "pi05": what a checkpoint of this model holds (config.json "type", the key layout)."""
        return "pi05" if self.pi05 else "pi0"

    def replace(self, **changes: Any) -> "Pi0Config":
        return dataclasses.replace(self, **changes)

    def with_cameras(self, n_or_names: int | tuple[str, ...]) -> "Pi0Config":
        if isinstance(n_or_names, int):
            names = (OPENPI_CAMERAS + tuple(f"cam_{i}" for i in range(3, n_or_names)))[:n_or_names]
        else:
            names = tuple(n_or_names)
        return self.replace(camera_names=names)

    @staticmethod
    def variant(name: str) -> "Pi0Config":
        """pi0: "pi0", "pi0_dummy", "pi0_tiny", "pi0_small"; pi0.5: "pi05", "pi05_tiny", "pi05_small"."""
        try:
            return _PI0_VARIANTS[name]()
        except KeyError:
            raise ValueError(f"unknown pi0 variant {name!r}; known: {sorted(_PI0_VARIANTS)}") from None

    @staticmethod
    def variants() -> list[str]:
        return sorted(_PI0_VARIANTS)

    # --- serialization (our config.json) ---
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["camera_names"] = list(self.camera_names)
        return {"format": CONFIG_FORMAT, **d}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Pi0Config":
        """Reads our own config.json, an openpi-converted one or a LeRobot pi0 one (recognized by their keys)."""
        if d.get("format") == CONFIG_FORMAT:
            kw = {k: v for k, v in d.items() if k != "format"}
            unknown = set(kw) - {f.name for f in dataclasses.fields(Pi0Config)}
            if unknown:
                raise ValueError(f"unknown keys in pi0 config: {sorted(unknown)}")
            kw["paligemma"] = GemmaConfig(**kw["paligemma"])
            kw["expert"] = GemmaConfig(**kw["expert"])
            kw["vision"] = SiglipConfig(**kw["vision"])
            kw["camera_names"] = tuple(kw["camera_names"])
            return Pi0Config(**kw)
        if "paligemma_variant" in d or "action_expert_variant" in d:
            return _from_port_dict(d)
        raise ValueError(
            "config.json is neither ours (format=%r) nor an openpi/LeRobot pi0 config (no paligemma_variant): keys %s"
            % (CONFIG_FORMAT, sorted(d)[:20])
        )


CONFIG_FORMAT = "aloha-workbench/pi0"
PI05_TOKEN_LEN = 200  # pi0.5's prompt (task + 32 discretized state values + "Action: ") in tokens
# The random-init CPU pi0.5s integrate their flow in 20 Euler steps, not openpi's 10: their time enters only through
# the expert's norms and their field stays curved, so 10 steps overshoot (the tiny one memorizing two demonstrations
# asked its grippers for up to 1.45 of a 0..1 range at 10 steps, 1.19 at 20, 1.13 at 30 and 50; arm error 0.035 vs
# 0.024 rad). The full-size pi05 keeps 10.
CPU_PI05_FLOW_STEPS = 20


def _from_port_dict(d: Mapping[str, Any]) -> Pi0Config:
    """openpi: {action_dim, action_horizon, paligemma_variant, action_expert_variant, precision}; LeRobot: {"type": "pi0" | "pi05", max_action_dim, max_state_dim, chunk_size,
    tokenizer_max_length, num_inference_steps, dtype, ...}. Both use the So400m vision tower."""
    kind = d.get("type")
    if kind not in (None, "pi0", "pi05"):
        raise ValueError(f"config.json is for policy type {kind!r}, not pi0 or pi05")
    # LeRobot's "type" only: an openpi pi0.5 conversion reads as pi0 and its weights are then refused by kind
    # (finetune.checkpoint), rather than served with openpi's pi0 conventions (finetune.foreign_policy)
    pi05 = kind == "pi05"
    action_dim = int(d.get("action_dim", d.get("max_action_dim", 32)))
    state_dim = int(d.get("max_state_dim", action_dim))
    dtype = str(d.get("precision", d.get("dtype", "bfloat16")))
    if dtype not in ("bfloat16", "float32"):
        dtype = "bfloat16"
    cams = OPENPI_CAMERAS
    feats = d.get("input_features")
    if isinstance(feats, Mapping):
        names = [k.rsplit(".", 1)[-1] for k, v in feats.items()
                 if isinstance(v, Mapping) and str(v.get("type", "")).upper() == "VISUAL"]
        if names:
            cams = tuple(names)
    return Pi0Config(
        name="pi05" if pi05 else "pi0",
        paligemma=GemmaConfig.variant(d.get("paligemma_variant", "gemma_2b")),
        expert=GemmaConfig.variant(d.get("action_expert_variant", "gemma_300m")),
        vision=SiglipConfig.variant("so400m"),
        action_dim=action_dim,
        state_dim=state_dim,
        action_horizon=int(d.get("action_horizon", d.get("chunk_size", 50))),
        max_token_len=int(d.get("tokenizer_max_length", d.get("max_token_len", PI05_TOKEN_LEN if pi05 else 48))),
        num_steps=int(d.get("num_inference_steps", d.get("num_steps", 10))),
        dtype=dtype,
        camera_names=cams,
        pi05=pi05,
        discrete_state_input=pi05 and bool(d.get("discrete_state_input", True)),
    )


_PI0_VARIANTS = {
    "pi0": lambda: Pi0Config(),
    # openpi's dummy Gemma pair, real vocabulary and 224 px cameras, tiny vision tower; fp32 for the CPU
    "pi0_dummy": lambda: Pi0Config(
        name="pi0_dummy",
        paligemma=GemmaConfig.variant("dummy"),
        expert=GemmaConfig.variant("dummy"),
        vision=SiglipConfig.variant("tiny_224"),
        dtype="float32",
    ),
    # unit tests: small vocabulary, 56 px cameras, expert narrower than the VLM
    "pi0_tiny": lambda: Pi0Config(
        name="pi0_tiny",
        paligemma=GemmaConfig.variant("tiny"),
        expert=GemmaConfig.variant("tiny_expert"),
        vision=SiglipConfig.variant("tiny_56"),
        vocab_size=512,
        dtype="float32",
    ),
    # CPU closed loop on the simulator: 1.6 M parameters, 56 px cameras (16 tokens each)
    "pi0_small": lambda: Pi0Config(
        name="pi0_small",
        paligemma=GemmaConfig.variant("small"),
        expert=GemmaConfig.variant("small_expert"),
        vision=SiglipConfig.variant("small_56"),
        vocab_size=512,
        dtype="float32",
    ),
    # pi0.5 (openpi pi05_base / lerobot/pi05_base): the same backbone pair, adaptive expert norms, 200-token prompt
    "pi05": lambda: Pi0Config(name="pi05", max_token_len=PI05_TOKEN_LEN, pi05=True, discrete_state_input=True),
    # its unit-test and CPU closed-loop twins (pi0_tiny / pi0_small's numbers), with pi0.5's 200-token prompt and
    # CPU_PI05_FLOW_STEPS denoising steps
    "pi05_tiny": lambda: Pi0Config(
        name="pi05_tiny",
        paligemma=GemmaConfig.variant("tiny"),
        expert=GemmaConfig.variant("tiny_expert"),
        vision=SiglipConfig.variant("tiny_56"),
        vocab_size=512,
        dtype="float32",
        max_token_len=PI05_TOKEN_LEN,
        pi05=True,
        discrete_state_input=True,
        num_steps=CPU_PI05_FLOW_STEPS,
    ),
    "pi05_small": lambda: Pi0Config(
        name="pi05_small",
        paligemma=GemmaConfig.variant("small"),
        expert=GemmaConfig.variant("small_expert"),
        vision=SiglipConfig.variant("small_56"),
        vocab_size=512,
        dtype="float32",
        max_token_len=PI05_TOKEN_LEN,
        pi05=True,
        discrete_state_input=True,
        num_steps=CPU_PI05_FLOW_STEPS,
    ),
}
