"""PaliGemma SentencePiece prompt tokenizer with openpi's cleaning and layout.

Layout: BOS + tokens(clean(prompt)) + tokens("\n"), right-padded with 0 to max_len (48) with a mask; longer
prompts are truncated with a warning. The full-size pi0 needs PaliGemma's `tokenizer.model`: a local file
(`--tokenizer PATH`), or the first of PALIGEMMA_SOURCES that yields one (`paligemma_tokenizer`): the legacy
`lerobot/pi0` repo pinned to a commit that still holds the file, then the gated `google/paligemma-3b-pt-224`.
Whatever is loaded for the full-size model is identity-checked first (`check_paligemma_tokenizer`: 257,152
pieces, BOS and the pieces the prompt layout uses), so a wrong file is refused before training or serving.
Models with a small vocabulary (the tiny and small test/CPU models) get their own small SentencePiece model
instead, trained once into the run folder (`tokenizer_for_run`); the model config's vocab size decides.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.hub import HubError, Progress, cache_dir, cache_folder, resolve_file
from finetune.model_config import PALIGEMMA_VOCAB_SIZE

DEFAULT_TOKENIZER_SOURCE = "lerobot/pi0"
# lerobot/pi0 at main no longer holds tokenizer.model (the repo moved to LeRobot's processor layout). A stored web
# page names this commit as one that still has it; written on a machine without network, so NOT verified here:
# if the hub disagrees, the gated fallback below is tried next and the error lists both.
DEFAULT_TOKENIZER_REVISION = "53f6654dc7b8680d12151ec5f07a2193a4ba0921"
GATED_TOKENIZER_SOURCE = "google/paligemma-3b-pt-224"
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_FETCH = "workbench base download --tokenizer-only"  # puts the default tokenizer into the hub cache


@dataclass(frozen=True)
class TokenizerSource:
    """A hub repo (at a revision) holding PaliGemma's tokenizer.model."""

    repo: str
    revision: str | None  # a commit pins it; None: main
    needs: str  # what it takes, for the error when every source failed

    @property
    def label(self) -> str:
        return f"{self.repo}@{(self.revision or 'main')[:12]}"


PALIGEMMA_SOURCES: tuple[TokenizerSource, ...] = (
    TokenizerSource(DEFAULT_TOKENIZER_SOURCE, DEFAULT_TOKENIZER_REVISION, "public, no account"),
    TokenizerSource(GATED_TOKENIZER_SOURCE, None, f"gated: accept the licence at https://huggingface.co/"
                    f"{GATED_TOKENIZER_SOURCE}, then `hf auth login` or HF_TOKEN"),
)

# What openpi's pi0 prompt layout relies on (BOS + text + "\n", padded with id 0) and what makes the file
# PaliGemma's rather than Gemma's or another SentencePiece model: Gemma's 256,000 pieces + 1,024 <locNNNN> +
# 128 <segNNN> = 257,152.
PALIGEMMA_SPECIAL_PIECES = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>"}
PALIGEMMA_BOS_ID = 2
PALIGEMMA_MARKER_PIECES = ("<loc0000>", "<loc1023>", "<seg000>", "<seg127>")
PROMPT_END = "\n"  # openpi tokenizes it separately: the "start of answer" token, one piece


SMALL_TOKENIZER_VOCAB = 120
_SMALL_TOKENIZER_WORDS = (
    "pick up the red cube and put it in the bowl transfer the cube from the left arm to the right arm insert the peg "
    "into the socket fold the towel in half open the drawer take out the marker grasp release hand over lift place "
    "push pull rotate close").split()


class TokenizerMismatch(ValueError):
    """The tokenizer file does not fit the model (not PaliGemma's for the full-size one, or larger than a small
    model's embedding); the message names the file and the fix."""


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
    def __init__(self, model_file: str | Path, max_len: int = 48, model_vocab_size: int | None = None) -> None:
        """`model_vocab_size` (the model config's): checks the file fits that model (`check_tokenizer_fits`)."""
        import sentencepiece

        self.path = Path(model_file)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer model {self.path} not found")
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        self.max_len = max_len
        if self.sp.bos_id() < 0:
            raise ValueError(f"tokenizer {self.path} has no BOS token (pi0 prompts start with BOS)")
        if model_vocab_size is not None:
            check_tokenizer_fits(self.sp, model_vocab_size, self.path)

    @classmethod
    def for_model(cls, model_file: str | Path, config: Any) -> "PromptTokenizer":
        """The tokenizer of a model (a Pi0Config): its prompt length, and the file checked against its vocabulary
        (what loading a policy for serving should use)."""
        return cls(model_file, max_len=config.max_token_len, model_vocab_size=config.vocab_size)

    @classmethod
    def from_source(cls, source: str | Path | None = None, *, max_len: int = 48,
                    revision: str | None = None, token: str | bool | None = None,
                    filename: str = TOKENIZER_FILE) -> "PromptTokenizer":
        """None: PaliGemma's, from the first of PALIGEMMA_SOURCES that has it (checked); else that file, folder
        or repo."""
        if source is None:
            return cls(paligemma_tokenizer(token=token), max_len=max_len)
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
    the real one. It covers pi0's task words and pi0.5's state prompt ("Task: ..., State: -1 0 ... 255;\nAction: ":
    every digit, '-', ':', ',', ';'), so the tiny/small pi0.5 reads its state as tokens, as PaliGemma's tokenizer
    makes them, not <unk>. An existing `folder/tokenizer.model` is kept (runs made before keep theirs)."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if path.is_file():
        return path
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / ".tokenizer_corpus.txt"
    rng = random.Random(0)
    lines = [" ".join(rng.choice(_SMALL_TOKENIZER_WORDS) for _ in range(8)) for _ in range(400)]
    for _ in range(200):  # pi0.5's prompt (finetune.transforms.prompt): its words, digits, '-', ':', ',', ';'
        task = " ".join(rng.choice(_SMALL_TOKENIZER_WORDS) for _ in range(rng.randint(2, 6)))
        bins = " ".join(str(rng.randint(-1, 255)) for _ in range(14))
        lines.append(f"Task: {task}, State: {bins};\nAction: ")
    corpus.write_text("\n".join(lines) + "\n")
    # character_coverage 1.0: every character of the corpus is a piece, so any state bin (-1..255) is tokens, not
    # <unk> (the default 0.9995 may drop rare characters such as '-')
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=SMALL_TOKENIZER_VOCAB,
        model_type="bpe", pad_id=0, bos_id=2, eos_id=1, unk_id=3, minloglevel=2, user_defined_symbols=["\n"],
        remove_extra_whitespaces=False, add_dummy_prefix=False, character_coverage=1.0)
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    return path


def tokenizer_for_run(source: str | None, run_dir: str | Path, vocab_size: int,
                      on_progress: Progress | None = None) -> Path:
    """The tokenizer.model a training run uses, checked against the model before training starts. Full vocabulary
    (pi0): `source` (a file, folder or hub repo) when given, else `paligemma_tokenizer()`; it must pass
    `check_paligemma_tokenizer`. Small vocabulary (tiny, small): `source` when given (no larger than the model's
    embedding), else a small one trained into `run_dir`."""
    if vocab_size < PALIGEMMA_VOCAB_SIZE:
        if not source:
            return train_small_tokenizer(run_dir)
        path = resolve_file(source, TOKENIZER_FILE)
    else:
        path = (resolve_file(source, TOKENIZER_FILE, on_progress=on_progress) if source
                else paligemma_tokenizer(on_progress=on_progress))
    check_tokenizer_fits(path, vocab_size)
    return path


# ------------------------------------------------------------------------------------------ PaliGemma's
class TokenizerUnavailable(HubError):
    """No source yielded PaliGemma's tokenizer.model; the message lists what was tried and what to run."""


def paligemma_tokenizer(token: str | bool | None = None, on_progress: Progress | None = None,
                        sources: Sequence[TokenizerSource] = PALIGEMMA_SOURCES) -> Path:
    """PaliGemma's tokenizer.model from the first source that has it (cached, or downloaded into the hub cache),
    identity-checked; a source whose file fails the check is passed over (and named in the error)."""
    tried: list[str] = []
    for src in sources:
        try:
            path = resolve_file(src.repo, TOKENIZER_FILE, revision=src.revision, token=token,
                                on_progress=on_progress, fetch=TOKENIZER_FETCH)
            check_paligemma_tokenizer(path)
            return path
        except HubError as e:
            tried.append(f"{src.label} ({TOKENIZER_FILE}; {src.needs}): {e.reason}")
        except TokenizerMismatch as e:
            tried.append(f"{src.label} ({TOKENIZER_FILE}; {src.needs}): {e}")
    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    first = sources[0] if sources else PALIGEMMA_SOURCES[0]
    raise TokenizerUnavailable(
        f"no PaliGemma tokenizer.model (the full-size pi0's prompt tokenizer) could be obtained. Tried, in order:\n"
        f"{lines}\nFix, one of:\n"
        f"  - with network: `{TOKENIZER_FETCH}` (into the hub cache {cache_dir()}; offline runs, "
        f"HF_HUB_OFFLINE=1, then find it). Without network here: run it on a machine with network, then copy its "
        f"~/.cache/huggingface/hub/{cache_folder(first.repo).name} to {cache_folder(first.repo)} here.\n"
        f"  - the gated copy: accept the licence at https://huggingface.co/{GATED_TOKENIZER_SOURCE}, run "
        f"`hf auth login` (or set HF_TOKEN), then `{TOKENIZER_FETCH}`.\n"
        f"  - a file you have: `workbench train ... --tokenizer /path/to/tokenizer.model` (PaliGemma's, "
        f"{PALIGEMMA_VOCAB_SIZE:,} pieces).",
        reason="no source had it")


def check_paligemma_tokenizer(tokenizer: Any, path: str | Path | None = None) -> None:
    """Refuses anything but PaliGemma's tokenizer (a path or a SentencePieceProcessor), through sentencepiece's
    own API: 257,152 pieces, <pad> <eos> <bos> <unk> at ids 0-3 with BOS id 2, "\\n" one piece of its own (the
    prompt's end), PaliGemma's <loc>/<seg> pieces present."""
    sp, path = _processor(tokenizer, path)
    problems: list[str] = []
    n = int(sp.get_piece_size())
    if n != PALIGEMMA_VOCAB_SIZE:
        problems.append(f"{n:,} pieces (PaliGemma's has {PALIGEMMA_VOCAB_SIZE:,})")
    if sp.bos_id() != PALIGEMMA_BOS_ID:
        problems.append(f"BOS id {sp.bos_id()} (PaliGemma's is {PALIGEMMA_BOS_ID})")
    for i, piece in PALIGEMMA_SPECIAL_PIECES.items():
        got = sp.id_to_piece(i) if i < n else None
        if got != piece:
            problems.append(f"id {i} is {got!r}, not {piece!r}")
    end = sp.encode(PROMPT_END)
    if len(end) != 1 or sp.id_to_piece(end[0]) != PROMPT_END or sp.is_unknown(end[0]):
        problems.append(f"{PROMPT_END!r} (the prompt's end) is {[sp.id_to_piece(i) for i in end]}, not one piece")
    absent = [m for m in PALIGEMMA_MARKER_PIECES if sp.is_unknown(sp.piece_to_id(m)) or
              sp.id_to_piece(sp.piece_to_id(m)) != m]
    if absent:
        problems.append(f"no {', '.join(absent)} pieces")
    if problems:
        raise TokenizerMismatch(
            f"{path} is not PaliGemma's tokenizer.model, which the full-size pi0 was trained with: "
            f"{'; '.join(problems)}. Fix: use PaliGemma's (`{TOKENIZER_FETCH}` fetches it; or --tokenizer PATH to "
            f"the tokenizer.model of {GATED_TOKENIZER_SOURCE}).")


def check_tokenizer_fits(tokenizer: Any, model_vocab_size: int, path: str | Path | None = None) -> None:
    """The check for a model with `model_vocab_size` embedding rows (its config's vocab_size): the full size
    must get PaliGemma's tokenizer; a small model any tokenizer whose ids fit its embedding."""
    if model_vocab_size >= PALIGEMMA_VOCAB_SIZE:
        check_paligemma_tokenizer(tokenizer, path)
        return
    sp, path = _processor(tokenizer, path)
    n = int(sp.get_piece_size())
    if n > model_vocab_size:
        raise TokenizerMismatch(
            f"{path} has {n:,} pieces but the model's embedding has {model_vocab_size:,} rows (ids past it cannot "
            "be embedded). Fix: leave --tokenizer out (a small model trains its own) or use the one in its run "
            "or policy folder.")


def _processor(tokenizer: Any, path: str | Path | None) -> tuple[Any, str | Path]:
    if isinstance(tokenizer, (str, Path)):
        import sentencepiece

        return sentencepiece.SentencePieceProcessor(model_file=str(tokenizer)), path or tokenizer
    return tokenizer, path or "the tokenizer"
