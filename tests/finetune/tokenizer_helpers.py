"""A stand-in for PaliGemma's tokenizer.model (not a test module).

No real PaliGemma tokenizer is on this machine (and it cannot be downloaded here). This builds, with
sentencepiece's own model format, a file that really has what finetune.tokenizer.check_paligemma_tokenizer looks
at: 257,152 pieces, <pad> <eos> <bos> <unk> at ids 0-3 (BOS 2), "\\n" as a piece of its own (at id 108; the
check does not look at its id), and <loc0000>..<loc1023>, <seg000>..<seg127> at ids 256,000..257,151 (Gemma's
256,000 + 1,024 + 128). The other pieces are fillers: it is not PaliGemma's vocabulary and tokenizes ordinary
text differently. It exercises the accept path of the identity check and the download paths; it says nothing
about the real file beyond those facts.
"""
from __future__ import annotations

from pathlib import Path

from finetune.model_config import PALIGEMMA_VOCAB_SIZE

GEMMA_VOCAB = 256_000
NEWLINE_ID = 108
WORDS = "pick up the red cube and put it in bowl transfer from left arm to right insert peg".split()


def paligemma_like_tokenizer(path: Path, *, newline: bool = True, vocab: int = PALIGEMMA_VOCAB_SIZE) -> Path:
    """Writes the stand-in to `path`. newline=False leaves "\\n" out (a wrong file of the right size)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    T = pb.ModelProto.SentencePiece
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    m.trainer_spec.vocab_size = vocab
    spec = m.trainer_spec
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = 0, 1, 2, 3
    spec.pad_piece, spec.eos_piece, spec.bos_piece, spec.unk_piece = "<pad>", "<eos>", "<bos>", "<unk>"
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True

    pieces: list[tuple[str, int]] = [("<pad>", T.CONTROL), ("<eos>", T.CONTROL), ("<bos>", T.CONTROL),
                                     ("<unk>", T.UNKNOWN)]
    normal = ["▁", *"abcdefghijklmnopqrstuvwxyz", *(f"▁{w}" for w in WORDS), *WORDS]
    while len(pieces) < NEWLINE_ID:
        pieces.append((normal.pop(0) if normal else f"<unused{len(pieces)}>", T.NORMAL if normal else T.USER_DEFINED))
    pieces.append(("\n" if newline else "<newline_missing>", T.USER_DEFINED))
    pieces += [(p, T.NORMAL) for p in normal]
    n_fill = vocab - 1024 - 128 - len(pieces)
    pieces += [(f"▁f{i}", T.NORMAL) for i in range(n_fill)]
    pieces += [(f"<loc{i:04d}>", T.USER_DEFINED) for i in range(1024)]
    pieces += [(f"<seg{i:03d}>", T.USER_DEFINED) for i in range(128)]
    for i, (piece, kind) in enumerate(pieces):
        sp = m.pieces.add()
        sp.piece, sp.type = piece, kind
        sp.score = 0.0 if kind != T.NORMAL else -float(i)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path
