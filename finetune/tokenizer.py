"""PaliGemma SentencePiece prompt tokenizer with openpi's cleaning and layout.

Layout: BOS + tokens(clean(prompt)) + tokens("\n"), right-padded with 0 to max_len (48) with a mask; longer
prompts are truncated with a warning. The `tokenizer.model` comes from a local path or a hub repo; the default,
non-gated source is the legacy `lerobot/pi0` repo; `google/paligemma-3b-pt-224` is gated (needs a token).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_TOKENIZER_SOURCE = "lerobot/pi0"
GATED_TOKENIZER_SOURCE = "google/paligemma-3b-pt-224"
TOKENIZER_FILE = "tokenizer.model"


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
