"""pi0.5's prompt: the task and the normalized state as 256-bin integers, in openpi's format.

    Task: {task}, State: {b0} {b1} ... {b13};\nAction:          (then BOS first, right-padded to max_len)

bins = np.digitize(state, np.linspace(-1, 1, 257)[:-1]) - 1 on the normalized state, as openpi's
`PaligemmaTokenizer.tokenize(prompt, state)` and LeRobot's `Pi05PrepareStateTokenizerProcessorStep`: values in
[-1, 1) fall in 0..255, 1 and above in 255, below -1 in -1 (kept: the pre-trained model saw those too). Which dims:
openpi tokenizes before padding (the rig's 14 for ALOHA); LeRobot's pi0.5 padded to 32 first until 2026-03
(`TransformConfig.prompt_state_dims` says which; these functions write whatever vector they are given).
pi0's layout (no state) stays finetune.tokenizer.PromptTokenizer.tokenize.
"""
from __future__ import annotations

import warnings

import numpy as np

from finetune.tokenizer import PromptTokenizer, PromptTruncatedWarning, TokenizedPrompt, clean_prompt

STATE_BINS = 256


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Normalized state [D] -> int64 bins [D] (see the module doc for the edges)."""
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state, dtype=np.float64), bins=edges).astype(np.int64) - 1


def state_prompt_text(task: str, state: np.ndarray) -> str:
    bins = discretize_state(state)
    return f"Task: {clean_prompt(task)}, State: {' '.join(map(str, bins.tolist()))};\nAction: "


def tokenize_state_prompt(tokenizer: PromptTokenizer, task: str, state: np.ndarray) -> TokenizedPrompt:
    """BOS + the encoded text, right-padded with 0 to the tokenizer's max_len (truncated with a warning)."""
    if np.ndim(state) != 1:
        raise ValueError(f"one state vector per prompt, got shape {np.shape(state)}")
    sp = tokenizer.sp
    ids = [sp.bos_id(), *sp.encode(state_prompt_text(task, state))]
    n, max_len = len(ids), tokenizer.max_len
    if n > max_len:
        warnings.warn(f"pi0.5 prompt is {n} tokens, truncated to {max_len} (the state numbers at its end are cut): "
                      f"{task[:60]!r}", PromptTruncatedWarning, stacklevel=2)
        ids, n = ids[:max_len], max_len
    tokens = np.zeros(max_len, dtype=np.int64)
    tokens[:n] = ids
    mask = np.zeros(max_len, dtype=bool)
    mask[:n] = True
    return TokenizedPrompt(tokens, mask)


__all__ = ["STATE_BINS", "discretize_state", "state_prompt_text", "tokenize_state_prompt"]
