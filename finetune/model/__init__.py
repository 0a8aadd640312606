"""pi0 / pi0.5 network modules (SigLIP, Gemma two-expert transformer, pi0 and pi0.5 heads and samplers)."""

from finetune.model.pi0 import Observation, Pi0, PrefixCache, count_parameters, random_observation
from finetune.model.pi05 import Pi05, model_class

__all__ = ["Observation", "Pi0", "Pi05", "PrefixCache", "count_parameters", "model_class", "random_observation"]
