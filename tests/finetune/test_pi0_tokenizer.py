"""Prompt tokenizer: openpi cleaning and layout, with a tiny SentencePiece model trained in the test."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece as spm

from finetune.tokenizer import PromptTokenizer, PromptTruncatedWarning, clean_prompt

TEXT = """pick up the red cube and put it in the bowl
transfer the cube from the left arm to the right arm
insert the peg into the socket
fold the towel in half
open the drawer and take out the marker
""" * 20


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    (d / "corpus.txt").write_text(TEXT)
    spm.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"), model_prefix=str(d / "tiny"), vocab_size=100, model_type="bpe", normalization_rule_name="identity",
        pad_id=0, bos_id=2, eos_id=1, unk_id=3, minloglevel=2,
        user_defined_symbols=["\n"], remove_extra_whitespaces=False, add_dummy_prefix=False)
    return d / "tiny.model"


def test_layout_bos_text_newline_padded(sp_model):
    tok = PromptTokenizer(sp_model, max_len=48)
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    out = tok.tokenize("  pick_up the\ncube ")
    expected = [sp.bos_id(), *sp.encode("pick up the cube"), *sp.encode("\n")]
    n = len(expected)
    assert out.tokens.dtype == np.int64 and out.tokens.shape == (48,) and out.mask.shape == (48,)
    assert out.tokens[:n].tolist() == expected and (out.tokens[n:] == 0).all()
    assert out.mask[:n].all() and not out.mask[n:].any()
    assert out.tokens[0] == 2 and len(sp.encode("\n")) == 1  # "\n" is one piece, as in PaliGemma


def test_truncation_warns(sp_model):
    tok = PromptTokenizer(sp_model, max_len=10)
    with pytest.warns(PromptTruncatedWarning, match="truncated to 10"):
        out = tok.tokenize("transfer the cube from the left arm to the right arm " * 3)
    assert out.mask.all() and out.tokens.shape == (10,)


def test_batch_and_clean(sp_model):
    tok = PromptTokenizer(sp_model)
    tokens, mask = tok.tokenize_batch(["fold the towel", "open_the_drawer"])
    assert tokens.shape == (2, 48) and mask.shape == (2, 48)
    assert clean_prompt(" open_the\ndrawer\n") == "open the drawer"
    assert tok.vocab_size == 100


def test_from_local_folder_and_missing_file(sp_model, tmp_path):
    tok = PromptTokenizer.from_source(sp_model.parent, filename="tiny.model")
    assert tok.tokenize("fold").mask.sum() >= 3
    with pytest.raises(FileNotFoundError):
        PromptTokenizer(tmp_path / "nope.model")


def test_a_small_models_tokenizer_is_trained_into_the_run_folder_once(tmp_path):
    """tokenizer_for_run: the small vocabulary gets a SentencePiece model trained once into the run folder, the
    same on every machine (it now covers pi0.5's state prompt too, so it differs from the one the earlier trainer
    wrote); an earlier run keeps its own (the committed old run holds one); a given source or the full vocabulary
    resolve."""
    import tarfile

    from finetune.model_config import PALIGEMMA_VOCAB_SIZE
    from finetune.tokenizer import TOKENIZER_FILE, tokenizer_for_run
    from train_helpers import ROOT

    path = tokenizer_for_run(None, tmp_path, vocab_size=512)
    assert path == tmp_path / TOKENIZER_FILE and sorted(p.name for p in tmp_path.iterdir()) == [TOKENIZER_FILE]
    with tarfile.open(ROOT / "tests" / "data" / "train_run_v1_tiny_step2.tar.xz") as tar:
        old = spm.SentencePieceProcessor(model_proto=tar.extractfile(f"./{TOKENIZER_FILE}").read())
    new = spm.SentencePieceProcessor(model_file=str(path))  # the file also records the training paths: not bytes
    pieces = lambda sp: [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]  # noqa: E731
    again = spm.SentencePieceProcessor(model_file=str(tokenizer_for_run(None, tmp_path / "again", vocab_size=512)))
    assert pieces(new) == pieces(again) and pieces(new) != pieces(old)
    earlier = tmp_path / "earlier_run"  # an earlier run's folder: its tokenizer is used as it is, not retrained
    earlier.mkdir()
    (earlier / TOKENIZER_FILE).write_bytes(old.serialized_model_proto())
    kept = spm.SentencePieceProcessor(model_file=str(tokenizer_for_run(None, earlier, vocab_size=512)))
    assert pieces(kept) == pieces(old)
    tok = PromptTokenizer(path, max_len=16)
    assert tok.vocab_size == 120 and tok.tokenize("pick up the cube").mask.sum() > 2
    mtime = path.stat().st_mtime_ns
    assert tokenizer_for_run(None, tmp_path, vocab_size=512).stat().st_mtime_ns == mtime  # kept, not retrained
    assert tokenizer_for_run(str(path), tmp_path / "elsewhere", vocab_size=512) == path


# ------------------------------------------------------------------------------------------ PaliGemma's identity
def test_the_paligemma_check_accepts_a_file_with_its_identity_and_refuses_others(tmp_path):
    """check_paligemma_tokenizer through sentencepiece's API. Accept path: the stand-in of tokenizer_helpers (no
    real PaliGemma file is on this machine): 257,152 pieces, BOS 2, "\\n" one piece, the <loc>/<seg> pieces.
    Refused, naming the file: the small trained tokenizer, and a file of the right size without the "\\n" piece."""
    from hub_helpers import standin_tokenizer
    from tokenizer_helpers import paligemma_like_tokenizer

    from finetune.model_config import Pi0Config
    from finetune.tokenizer import PromptTokenizer, TokenizerMismatch, check_paligemma_tokenizer, train_small_tokenizer

    good = standin_tokenizer()
    check_paligemma_tokenizer(good)
    tok = PromptTokenizer.for_model(good, Pi0Config.variant("pi0"))
    out = tok.tokenize("pick up the red cube")
    n = int(out.mask.sum())
    assert out.tokens[0] == 2 and tok.sp.id_to_piece(int(out.tokens[n - 1])) == "\n" and tok.max_len == 48

    small = train_small_tokenizer(tmp_path / "small")
    with pytest.raises(TokenizerMismatch, match=f"{small} is not PaliGemma's tokenizer.model.*120 pieces"):
        check_paligemma_tokenizer(small)
    with pytest.raises(TokenizerMismatch, match="120 pieces"):  # what loading a full-size policy gets
        PromptTokenizer.for_model(small, Pi0Config.variant("pi0"))
    no_newline = paligemma_like_tokenizer(tmp_path / "bad" / "tokenizer.model", newline=False)
    with pytest.raises(TokenizerMismatch, match=r"bad/tokenizer.model is not PaliGemma's.*'\\n' \(the prompt's end\)"):
        check_paligemma_tokenizer(no_newline)
    assert PromptTokenizer.for_model(small, Pi0Config.variant("pi0_tiny")).vocab_size == 120  # small: no check


def test_a_runs_tokenizer_is_checked_by_the_models_vocabulary(tmp_path):
    """tokenizer_for_run: full vocabulary -> the file must be PaliGemma's (a wrong --tokenizer is refused before
    training); small vocabulary -> its own trained tokenizer, or a given one that fits its embedding."""
    from hub_helpers import standin_tokenizer

    from finetune.model_config import PALIGEMMA_VOCAB_SIZE
    from finetune.tokenizer import TokenizerMismatch, tokenizer_for_run, train_small_tokenizer

    small = train_small_tokenizer(tmp_path / "small")
    with pytest.raises(TokenizerMismatch, match=f"{small} is not PaliGemma's"):
        tokenizer_for_run(str(small), tmp_path / "run", vocab_size=PALIGEMMA_VOCAB_SIZE)
    assert tokenizer_for_run(str(standin_tokenizer()), tmp_path / "run", PALIGEMMA_VOCAB_SIZE) == standin_tokenizer()
    with pytest.raises(TokenizerMismatch, match="257,152 pieces but the model's embedding has 512 rows"):
        tokenizer_for_run(str(standin_tokenizer()), tmp_path / "run", vocab_size=512)
    assert tokenizer_for_run(None, tmp_path / "tiny", vocab_size=512) == tmp_path / "tiny" / "tokenizer.model"


def test_a_wrong_tokenizer_fails_the_run_before_the_model_is_built_and_a_policy_refuses_one(tmp_path):
    """`workbench train --tokenizer WRONG`: a run failure (Failed event, one readable line, exit 2) before the
    model is built, not a traceback; a policy folder whose tokenizer does not fit its model is refused by name
    when it is loaded for serving."""
    import shutil

    from hub_helpers import standin_tokenizer
    from serve_helpers import tiny_policy
    from train_helpers import events, run_cli

    from finetune import events as fev
    from finetune.policy_folder import load_policy
    from finetune.tokenizer import TokenizerMismatch

    run = tmp_path / "run"
    res = run_cli("--config", "tiny", "--dataset", "synthetic", "--out", str(run), "--steps", "1",
                  "--tokenizer", str(standin_tokenizer()))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "257,152 pieces but the model's embedding has" in res.stderr
    seen = events(run)
    assert [e.error for e in seen if isinstance(e, fev.Failed)] == ["tokenizer"]
    assert not any(isinstance(e, fev.Status) and e.text == "building the model" for e in seen)

    folder = tmp_path / "policy"
    shutil.copytree(tiny_policy(), folder)
    shutil.copyfile(standin_tokenizer(), folder / "tokenizer.model")
    with pytest.raises(TokenizerMismatch, match="tokenizer.model"):
        load_policy(folder)
