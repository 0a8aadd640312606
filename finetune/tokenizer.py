"""PaliGemma SentencePiece prompt tokenizer with openpi's cleaning and layout.

Layout: BOS + tokens(clean(prompt)) + tokens("\n"), right-padded with 0 to max_len (48) with a mask; longer
prompts are truncated with a warning. The `tokenizer.model` comes from a local path or a hub repo; the default,
non-gated source is the legacy `lerobot/pi0` repo; `google/paligemma-3b-pt-224` is gated (needs a token). Models
with a small vocabulary (the tiny and small test/CPU models) get their own small SentencePiece model instead,
trained once into the run folder (`tokenizer_for_run`).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_TOKENIZER_SOURCE = "lerobot/pi0"
GATED_TOKENIZER_SOURCE = "google/paligemma-3b-pt-224"
TOKENIZER_FILE = "tokenizer.model"


SMALL_TOKENIZER_VOCAB = 120
_SMALL_TOKENIZER_WORDS = (
    "pick up the red cube and put it in the bowl transfer the cube from the left arm to the right arm insert the peg "
    "into the socket fold the towel in half open the drawer take out the marker grasp release hand over lift place "
    "push pull rotate close").split()


class PromptTruncatedWarning(UserWarning):
    pass


def clean_prompt(text: str) -> str:
    """openpi: strip, underscores and newlines to spaces (task names like "pick_up_cube" read as words)."""
    return text.strip().replace("_", " ").replace("\n", " ")


@dataclass(frozen=True)
class TokenizedPrompt:
    tokens: np.ndarray  # [L] int64
    mask: np.ndarray  # [L] bool


class PromptTokenizer:
    def __init__(self, model_file: str | Path, max_len: int = 48) -> None:
        import sentencepiece

        self.path = Path(model_file)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer model {self.path} not found")
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        self.max_len = max_len
        if self.sp.bos_id() < 0:
            raise ValueError(f"tokenizer {self.path} has no BOS token (pi0 prompts start with BOS)")

    @classmethod
    def from_source(cls, source: str | Path = DEFAULT_TOKENIZER_SOURCE, *, max_len: int = 48,
                    revision: str | None = None, token: str | bool | None = None,
                    filename: str = TOKENIZER_FILE) -> "PromptTokenizer":
        from finetune.hub import resolve_file

        return cls(resolve_file(source, filename, revision=revision, token=token), max_len=max_len)

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def tokenize(self, prompt: str) -> TokenizedPrompt:
        ids = [self.sp.bos_id(), *self.sp.encode(clean_prompt(prompt)), *self.sp.encode("\n")]
        n = len(ids)
        if n > self.max_len:
            warnings.warn(f"prompt is {n} tokens, truncated to {self.max_len}: {prompt[:80]!r}",
                          PromptTruncatedWarning, stacklevel=2)
            ids, n = ids[: self.max_len], self.max_len
        tokens = np.zeros(self.max_len, dtype=np.int64)
        tokens[:n] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[:n] = True
        return TokenizedPrompt(tokens, mask)

    def tokenize_batch(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = [self.tokenize(p) for p in prompts]
        return np.stack([o.tokens for o in out]), np.stack([o.mask for o in out])


def train_small_tokenizer(folder: str | Path) -> Path:
    """A small SentencePiece model (BPE, 120 pieces, openpi's special ids) for models whose embedding is far below
    the PaliGemma vocabulary; trained once into `folder` (deterministically) and shipped in the policy folder like
    the real one. An existing `folder/tokenizer.model` is kept."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if path.is_file():
        return path
    import sentencepiece as spm

    corpus = folder / ".tokenizer_corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choice(_SMALL_TOKENIZER_WORDS) for _ in range(8)) for _ in range(400))
                      + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=SMALL_TOKENIZER_VOCAB,
        model_type="bpe", pad_id=0, bos_id=2, eos_id=1, unk_id=3, minloglevel=2, user_defined_symbols=["\n"],
        remove_extra_whitespaces=False, add_dummy_prefix=False)
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    return path


def tokenizer_for_run(source: str | None, run_dir: str | Path, vocab_size: int) -> Path:
    """The tokenizer.model a training run uses: `source` (a file, folder or hub repo) when given; else the
    PaliGemma one (DEFAULT_TOKENIZER_SOURCE) for the full vocabulary, or a small one trained into `run_dir`."""
    from finetune.hub import resolve_file
    from finetune.model_config import PALIGEMMA_VOCAB_SIZE

    if source:
        return resolve_file(source, TOKENIZER_FILE)
    if vocab_size < PALIGEMMA_VOCAB_SIZE:
        return train_small_tokenizer(run_dir)
    return resolve_file(DEFAULT_TOKENIZER_SOURCE, TOKENIZER_FILE)
