"""Shared helpers for the pi0.5 tests (imported by test modules; not a test module itself)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from finetune.model_config import Pi0Config
from finetune.model.pi05 import Pi05
from pi0_helpers import PREFIX, reference_hub_keys

PI05_TINY = Pi0Config.variant("pi05_tiny")


def reference_pi05_hub_keys(cfg: Pi0Config, with_expert_lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    """The key -> shape layout of `lerobot/pi05_base`, written from the reference notes (pi05.md: "keys as for
    pi0, with" the differences below), independently of the model's modules."""
    keys = reference_hub_keys(cfg, with_expert_lm_head)
    e = cfg.expert
    for name in ("state_proj", "action_time_mlp_in", "action_time_mlp_out"):  # gone in pi0.5
        del keys[name + ".weight"], keys[name + ".bias"]
    expert = PREFIX + "gemma_expert.model."
    norms = [f"{expert}layers.{n}.{ln}" for n in range(e.depth)
             for ln in ("input_layernorm", "post_attention_layernorm")] + [expert + "norm"]
    for norm in norms:  # plain norm weight -> the adaRMS modulation Linear(cond 1024 -> 3 x 1024)
        del keys[norm + ".weight"]
        keys[norm + ".dense.weight"] = (3 * e.width, e.width)
        keys[norm + ".dense.bias"] = (3 * e.width,)
    for name in ("time_mlp_in", "time_mlp_out"):
        keys[name + ".weight"] = (e.width, e.width)
        keys[name + ".bias"] = (e.width,)
    return keys


def tiny_pi05(seed: int = 0, modulation_std: float = 0.2, **changes) -> Pi05:
    """A tiny pi0.5 with random (not openpi's zero) modulation, so the adaptive norms do something."""
    torch.manual_seed(seed)
    model = Pi05(PI05_TINY.replace(**changes))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dense." in name:
                p.copy_(torch.randn(p.shape, generator=g) * modulation_std)
    return model.eval()


def write_pi05_hub_style(folder, cfg: Pi0Config, drop=(), reshape=None, seed=0) -> dict[str, torch.Tensor]:
    """A pi0.5 checkpoint as the hub stores it (reference layout, float32, tied embed_tokens absent, the unused
    expert lm_head present), with safetensors' own writer."""
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn((reshape or {}).get(k, s), generator=g) * 0.05
               for k, s in reference_pi05_hub_keys(cfg).items() if k not in drop}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors


def digit_tokenizer(folder) -> "Path":
    """A small SentencePiece model that, unlike finetune.tokenizer's small one, has pieces for digits and pi0.5's
    prompt words (so the state numbers are real tokens, as with PaliGemma's tokenizer)."""
    from pathlib import Path

    import sentencepiece as spm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    words = "Task: transfer the cube, State: 0 1 2 3 4 5 6 7 8 9 -1 128 255;\nAction: pick up".split(" ")
    corpus.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) for i in range(300)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=90, model_type="bpe", pad_id=0,
        bos_id=2, eos_id=1, unk_id=3, minloglevel=2, user_defined_symbols=["\n", *"0123456789"],
        remove_extra_whitespaces=False, add_dummy_prefix=False)
    return folder / "tokenizer.model"
