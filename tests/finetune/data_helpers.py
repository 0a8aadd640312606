"""Helpers for the training-data tests: a tiny SentencePiece tokenizer and episodes recorded on the simulated rig
through the real `workbench record` command (the scripted demonstrator; its phases become segments)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from finetune.tokenizer import PromptTokenizer

CORPUS = """pick up the red cube and put it in the bowl
transfer the cube from the left arm to the right arm
approach the cube grasp the cube hand over release
fold the towel in half
""" * 20


def tiny_tokenizer(folder: Path) -> PromptTokenizer:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text(CORPUS)
    spm.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "tiny"), vocab_size=100, model_type="bpe",
        normalization_rule_name="identity", pad_id=0, bos_id=2, eos_id=1, unk_id=3, minloglevel=2,
        user_defined_symbols=["\n"], remove_extra_whitespaces=False, add_dummy_prefix=False)
    return PromptTokenizer(folder / "tiny.model")


def record_sim(dataset: Path, episodes: int = 3, seconds: float = 2.0, task: str = "transfer the cube",
               seed: int = 0) -> Path:
    """Record episodes on the sim-transfer-cube rig with the CLI (3 cameras, 320x240, 50 Hz)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.setdefault("MUJOCO_GL", "osmesa")
    cmd = [sys.executable, "-m", "workbench.cli", "record", "--rig", "sim-transfer-cube", "--dataset", str(dataset),
           "--task", task, "--episodes", str(episodes), "--episode-s", str(seconds), "--seed", str(seed)]
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"recording on the sim rig failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return dataset
