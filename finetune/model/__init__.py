"""pi0 network modules (SigLIP, Gemma two-expert transformer, pi0 head and sampler)."""

from finetune.model.pi0 import Observation, Pi0, PrefixCache, count_parameters, random_observation

__all__ = ["Observation", "Pi0", "PrefixCache", "count_parameters", "random_observation"]
