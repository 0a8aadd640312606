"""The transform chain shared by training and serving (see pipeline.PolicyTransforms)."""
from finetune.transforms.config import DEFAULT_CAMERA_MAP, GripperConversion, TransformConfig
from finetune.transforms.pipeline import NORM_STATS_FILE, PolicyTransforms
from finetune.transforms.vectors import Vectors, pi_space_steps, vector_chain

__all__ = ["DEFAULT_CAMERA_MAP", "GripperConversion", "TransformConfig", "PolicyTransforms", "NORM_STATS_FILE",
           "Vectors", "pi_space_steps", "vector_chain"]
