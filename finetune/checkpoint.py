"""pi0 checkpoints: the Hugging Face key layout, strict key checks, streaming load and save.

Layout (`lerobot/pi0_base`, openpi checkpoints converted to PyTorch, and ours): a folder with `config.json`,
`model.safetensors` (or shards + `model.safetensors.index.json`) and optionally `assets/<id>/norm_stats.json`.
Keys equal our `state_dict()` keys, except:
  * `...language_model.embed_tokens.weight` is tied to `paligemma.lm_head.weight`; only lm_head is stored;
  * `gemma_expert.lm_head.weight` (unused by pi0) may be stored; it is skipped without being read.

Memory: the model is built on the meta device, each parameter is then allocated in its target dtype and filled
from the file in bounded chunks (default: positioned reads through a 64 MiB staging buffer), so neither the
whole fp32 file nor a whole fp32 tensor is ever held in RAM. Saving streams too (`WeightStream`: one tensor made
and written at a time). Loading for inference builds bf16 unless asked for fp32 (`inference_dtype`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from finetune.model_config import Pi0Config
from finetune.model.pi0 import Pi0, param_dtype, torch_dtype
from finetune.model.pi05 import model_class
from finetune.presets import PI0_BASE, PI05_BASE

TIED_ALIAS = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
TIED_SOURCE = "paligemma_with_expert.paligemma.lm_head.weight"
IGNORED_KEYS = frozenset({"paligemma_with_expert.gemma_expert.lm_head.weight"})
MODEL_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
CHUNK_BYTES = 64 << 20

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_FLOAT_ST = {"F64", "F32", "F16", "BF16"}


class CheckpointError(RuntimeError):
    """A checkpoint folder or file cannot be used."""


class CheckpointKeyError(CheckpointError):
    """Keys or shapes of a checkpoint do not match the model (strict load)."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], model_name: str) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"checkpoint {source} does not match pi0 variant {model_name!r} (strict load):"]
        lines += _capped("missing", missing)
        lines += _capped("unexpected", unexpected)
        lines += _capped("shape mismatch", [f"{k}: checkpoint {list(f)} vs model {list(m)}" for k, f, m in mismatched])
        super().__init__("\n".join(lines))


def _capped(title: str, items: list[str], cap: int = 10) -> list[str]:
    if not items:
        return []
    out = [f"  {title} ({len(items)}):"] + [f"    {x}" for x in items[:cap]]
    if len(items) > cap:
        out.append(f"    ... and {len(items) - cap} more")
    return out


# ---------------------------------------------------------------- safetensors, read and written by hand
@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parses the JSON header only (a few hundred KB for pi0): key -> entry, plus the file's metadata."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(raw, "little")
        if n > 100 << 20:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from None
    size = path.stat().st_size
    meta = header.pop("__metadata__", None) or {}
    entries = {}
    for key, e in header.items():
        b, en = e["data_offsets"]
        entries[key] = TensorEntry(path, e["dtype"], tuple(e["shape"]), 8 + n + b, 8 + n + en)
        if 8 + n + en > size:
            raise CheckpointError(f"{path}: truncated file (tensor {key} ends past the end of the file)")
    return entries, meta


def write_safetensors(path: Path, specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                      produce: Callable[[str], Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Streams tensors to a safetensors file one at a time (safetensors' save_file would first copy them all to
    bytes). `produce(key)` returns the tensor, any device; it is written right away and dropped."""
    header: dict[str, Any] = {}
    offset = 0
    for key in sorted(specs):
        shape, dtype = specs[key]
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = Path(str(path) + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for key in sorted(specs):
                shape, dtype = specs[key]
                t = produce(key).detach()
                if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                    raise ValueError(f"{key}: produced {tuple(t.shape)} {t.dtype}, declared {tuple(shape)} {dtype}")
                t = t.to("cpu").contiguous().reshape(-1)
                f.write(t.view(torch.uint8).numpy().data if t.numel() else b"")
                del t
    except BaseException:  # a full disk, a failed producer, Ctrl-C: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def save_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
    write_safetensors(path, {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}, lambda k: tensors[k],
                      metadata)


class _PreadReader:
    """Reads a tensor's bytes in chunks through one reusable staging buffer and casts into the destination."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk = chunk_bytes
        self.staging = torch.empty(chunk_bytes, dtype=torch.uint8)
        self.files: dict[Path, Any] = {}

    def read_into(self, entry: TensorEntry, out: Tensor) -> None:
        src = _ST_DTYPES[entry.dtype]
        item = torch.empty((), dtype=src).element_size()
        flat = out.view(-1)
        per_chunk = max(1, self.chunk // item)
        f = self.files.get(entry.file) or self.files.setdefault(entry.file, open(entry.file, "rb"))
        direct = out.dtype == src and out.device.type == "cpu"  # same dtype on the CPU: read into place
        for e0 in range(0, flat.numel(), per_chunk):
            e1 = min(flat.numel(), e0 + per_chunk)
            n = (e1 - e0) * item
            buf = flat[e0:e1].view(torch.uint8) if direct else self.staging[:n]
            f.seek(entry.begin + e0 * item)
            _read_exactly(f, memoryview(buf.numpy()), entry.file)
            if not direct:
                flat[e0:e1].copy_(buf.view(src))

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def _read_exactly(f: Any, view: memoryview, path: Path) -> None:
    got = 0
    while got < len(view):
        r = f.readinto(view[got:])
        if not r:
            raise CheckpointError(f"{path}: unexpected end of file")
        got += r


class _SafeOpenReader:
    """safetensors' own memory-mapped reader, sliced along dim 0 so no whole fp32 tensor is materialized."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        from safetensors import safe_open

        self._open = safe_open
        self.chunk = chunk_bytes
        self.files: dict[Path, Any] = {}

    def read_into(self, entry: TensorEntry, out: Tensor, key: str = "") -> None:
        f = self.files.get(entry.file)
        if f is None:
            f = self.files[entry.file] = self._open(str(entry.file), framework="pt").__enter__()
        sl = f.get_slice(key)
        if out.dim() == 0:
            out.copy_(sl[:] if entry.shape else f.get_tensor(key))
            return
        rows = out.shape[0]
        row_bytes = max(1, (entry.end - entry.begin) // max(rows, 1))
        step = max(1, self.chunk // row_bytes)
        for r0 in range(0, rows, step):
            out[r0:r0 + step].copy_(sl[r0:r0 + step])

    def close(self) -> None:
        for f in self.files.values():
            f.__exit__(None, None, None)
        self.files.clear()


# ---------------------------------------------------------------- key layout
def checkpoint_key_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Keys (and shapes) a pi0 checkpoint must store: the state_dict without the tied embed_tokens alias."""
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items() if k != TIED_ALIAS}


def list_checkpoint_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if (folder / INDEX_FILE).is_file():
        index = json.loads((folder / INDEX_FILE).read_text())
        return sorted({folder / name for name in index["weight_map"].values()})
    if (folder / MODEL_FILE).is_file():
        return [folder / MODEL_FILE]
    raise CheckpointError(f"{folder}: no {MODEL_FILE} (or {INDEX_FILE}); files: "
                          f"{sorted(p.name for p in folder.iterdir())[:20] if folder.is_dir() else 'not a folder'}")


def read_entries(files: Iterable[Path]) -> dict[str, TensorEntry]:
    entries: dict[str, TensorEntry] = {}
    for path in files:
        part, _ = read_safetensors_header(path)
        dup = set(part) & set(entries)
        if dup:
            raise CheckpointError(f"keys stored twice across shards: {sorted(dup)[:5]}")
        entries.update(part)
    if entries and not any(k.startswith("paligemma_with_expert.") for k in entries) and all(
            k.startswith("model.") for k in entries):
        entries = {k[len("model."):]: v for k, v in entries.items()}  # a policy wrapper's prefix
    return entries


def check_keys(expected: Mapping[str, tuple[int, ...]], entries: Mapping[str, TensorEntry], source: str,
               model_name: str) -> None:
    """Strict comparison; the tied alias may be present (then its shape is checked too), ignored keys are skipped."""
    found = {k: e for k, e in entries.items() if k not in IGNORED_KEYS}
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected and k != TIED_ALIAS)
    mismatched = []
    for k, e in sorted(found.items()):
        want = expected.get(k, expected.get(TIED_SOURCE) if k == TIED_ALIAS else None)
        if want is not None and tuple(e.shape) != tuple(want):
            mismatched.append((k, tuple(e.shape), tuple(want)))
    not_float = sorted(f"{k} ({e.dtype})" for k, e in found.items() if e.dtype not in _FLOAT_ST)
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(source, missing, unexpected, mismatched, model_name)
    if not_float:
        raise CheckpointError(f"{source}: non-float tensors: {not_float[:10]}")


# ---------------------------------------------------------------- building and materializing
def build_model(config: Pi0Config, device: torch.device | str = "meta") -> Pi0:
    """Builds on `device`; on "meta" nothing is allocated (use materialize_ / load_weights_ next)."""
    with torch.device(device):
        model = model_class(config)(config)  # Pi05 for a pi0.5 config
    if str(device) != "meta":
        model.apply_precision()
    return model


def materialize_(model: nn.Module, device: torch.device | str, compute_dtype: torch.dtype,
                 fill: Callable[[list[str], Tensor], None]) -> nn.Module:
    """Replaces every (meta) parameter by a real one in its policy dtype, filled by `fill(names, tensor)`.

    Tied parameters are allocated once and re-assigned to every owner, so ties survive."""
    owners: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    names: dict[int, list[str]] = defaultdict(list)
    params: dict[int, nn.Parameter] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is None:
                continue
            if (mod, pname) not in owners[id(p)]:
                owners[id(p)].append((mod, pname))
            full = f"{mod_name}.{pname}" if mod_name else pname
            if full not in names[id(p)]:
                names[id(p)].append(full)
            params[id(p)] = p
    for pid, p in params.items():
        dtype = param_dtype(names[pid][0], compute_dtype)
        t = torch.empty(p.shape, dtype=dtype, device=device)
        fill(names[pid], t)
        new = nn.Parameter(t, requires_grad=p.requires_grad)
        for mod, pname in owners[pid]:
            setattr(mod, pname, new)
    for name, b in model.named_buffers():
        if b.is_meta:
            raise CheckpointError(f"buffer {name} left on the meta device")
    return model


# pi0.5's time MLP (the condition of every adaptive expert norm) takes openpi's nnx.Linear default, lecun-normal
# (std 1/sqrt(fan_in)): at N(0, 0.02) two layers shrink the condition to rms 0.002 (pi05_tiny) - 0.007 (pi05_small),
# and the zero-initialized modulations (adaLN-zero) that multiply it see almost no flow time: the expert trains
# nearly time-blind and its sampled grippers overshoot (bench/README.md, "pi0.5 from random weights")
_FAN_IN_INIT = ("time_mlp_in.weight", "time_mlp_out.weight")


def random_init_(model: Pi0, device: torch.device | str, std: float = 0.02, seed: int = 0) -> Pi0:
    """Random weights straight on the device (CPU models, benchmarks): N(0, std) matrices, zero biases and norm
    weights (so pi0.5's modulations start at zero), pi0.5's time MLP lecun-normal."""
    g = torch.Generator(device=device).manual_seed(seed)

    def fill(names: list[str], t: Tensor) -> None:
        n = names[0]
        if n.endswith("bias") or "norm" in n:
            t.zero_()
            if "layer_norm" in n or "post_layernorm" in n:
                t.fill_(1.0 if n.endswith("weight") else 0.0)
        elif n in _FAN_IN_INIT:
            t.normal_(0.0, t.shape[1] ** -0.5, generator=g)
        else:
            t.normal_(0.0, std, generator=g)

    return materialize_(model, device, model.compute_dtype, fill)


# ---------------------------------------------------------------- pi0 or pi0.5
KIND_NAMES = {"pi0": "pi0", "pi05": "pi0.5"}
# keys only one of the two networks has (pi0.md / pi05.md); LeRobot renames time_mlp_* <-> action_time_mlp_* between
# its classes, so a loader that renamed silently would load half a model
_KIND_MARKERS = {
    "pi0": ("state_proj.weight", "action_time_mlp_in.weight"),
    "pi05": ("time_mlp_in.weight", "paligemma_with_expert.gemma_expert.model.norm.dense.weight"),
}


class CheckpointKindError(CheckpointError):
    """A pi0 checkpoint where a pi0.5 one is wanted, or the reverse."""


def checkpoint_kind(keys: Iterable[str]) -> str | None:
    """"pi0" or "pi05" from a checkpoint's keys (None: neither's marker keys, or both's)."""
    ks = set(keys)
    found = [k for k, marks in _KIND_MARKERS.items() if any(m in ks for m in marks)]
    return found[0] if len(found) == 1 else None


BASE_REPOS = {"pi0": PI0_BASE, "pi05": PI05_BASE}  # each kind's public base checkpoint


def refuse_other_kind(found: str | None, wanted: str, source: str, evidence: str, fix: str | None = None) -> None:
    """Raises CheckpointKindError when a checkpoint of one kind is given where the other is wanted. `fix`: the
    caller's remedy (default: the other checkpoint or the other configuration, in general words)."""
    if found is None or found == wanted:
        return
    fix = fix or (f"give a {KIND_NAMES[wanted]} checkpoint (e.g. {BASE_REPOS[wanted]}) or pick a {KIND_NAMES[found]} "
                  f"configuration (--config {'pi05' if found == 'pi05' else 'pi0'}...).")
    raise CheckpointKindError(
        f"{source} is a {KIND_NAMES[found]} checkpoint ({evidence}), but a {KIND_NAMES[wanted]} model was asked "
        f"for: the two networks differ (pi0.5 has no state token, time-conditioned expert norms and a longer "
        f"prompt), so its weights cannot be used. Fix: {fix}")


def check_folder_kind(folder: Path, config: Pi0Config, wanted: str, source: str, fix: str | None = None) -> None:
    """Refuses (CheckpointKindError) a checkpoint folder of the other kind before any model is built: by its
    config.json (`config`, as read_config read it), then by its weights' keys (safetensors headers only, a few
    hundred KB: an openpi pi0.5 conversion's config.json has no "type" and reads as pi0). A folder without weights
    passes here; loading names what is missing."""
    refuse_other_kind(config.kind, wanted, source, f"its {CONFIG_FILE} describes a {KIND_NAMES[config.kind]} model",
                      fix)
    try:
        entries = read_entries(list_checkpoint_files(folder))
    except CheckpointError:
        return
    found = checkpoint_kind(entries)
    if found is not None:
        refuse_other_kind(found, wanted, source,
                          "its weights have " + ", ".join(m for m in _KIND_MARKERS[found] if m in entries), fix)


def load_weights_(model: Pi0, folder_or_files: Path | list[Path], device: torch.device | str = "cpu",
                  reader: str = "pread", source: str | None = None) -> Pi0:
    """Fills a meta-built model from safetensors, strictly: every expected key present with its shape, no
    unknown key (the expert lm_head is skipped unread, the tied embedding is rebuilt from lm_head)."""
    files = list_checkpoint_files(folder_or_files) if isinstance(folder_or_files, (str, Path)) else folder_or_files
    entries = read_entries(files)
    src = source or str(folder_or_files)
    found = checkpoint_kind(entries)
    if found is not None:
        refuse_other_kind(found, model.config.kind, src,
                          "its weights have " + ", ".join(m for m in _KIND_MARKERS[found] if m in entries))
    check_keys(checkpoint_key_shapes(model), entries, src, model.config.name)
    rd: Any = _PreadReader() if reader == "pread" else _SafeOpenReader()

    def fill(names: list[str], t: Tensor) -> None:
        key = next((n for n in names if n in entries), None)
        if key is None and TIED_ALIAS in names:
            key = TIED_ALIAS if TIED_ALIAS in entries else None
        if key is None:  # cannot happen after check_keys; kept as a guard
            raise CheckpointKeyError(src, names, [], [], model.config.name)
        if reader == "pread":
            rd.read_into(entries[key], t)
        else:
            rd.read_into(entries[key], t, key)

    try:
        with torch.no_grad():
            materialize_(model, device, model.compute_dtype, fill)
    finally:
        rd.close()
    return model


def read_config(folder: Path, kind: str | None = None) -> Pi0Config:
    """The folder's config.json as a Pi0Config (ours, openpi's or LeRobot's "type": "pi0" / "pi05"). `kind`
    ("pi0" / "pi05"): refuse a checkpoint of the other kind (CheckpointKindError, naming both)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}; pass config= explicitly")
    cfg = Pi0Config.from_dict(json.loads(path.read_text()))
    if kind is not None:
        refuse_other_kind(cfg.kind, kind, str(folder), f"its {CONFIG_FILE} describes a {KIND_NAMES[cfg.kind]} model")
    return cfg


def inference_dtype(config: Pi0Config, requested: str | None = None) -> str:
    """The dtype a model is built in to run or to be exported: `requested` when the caller asks for one; else
    bfloat16 (openpi's serving and export dtype; a float32 pi0 is 13 GB instead of 7), whatever a base's
    config.json says (`lerobot/pi0_base` says float32). Only the small CPU models (pi0_tiny, pi0_small,
    pi0_dummy: their variant says float32 and the dims are the variant's) keep a float32 config's float32."""
    if requested is not None:
        if requested not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', not {requested!r}")
        return requested
    if config.dtype == "float32" and _is_float32_cpu_variant(config):
        return "float32"
    return "bfloat16"


def _is_float32_cpu_variant(config: Pi0Config) -> bool:
    try:
        v = Pi0Config.variant(config.name)
    except ValueError:
        return False
    return v.dtype == "float32" and (v.paligemma, v.expert, v.vision, v.vocab_size) == (
        config.paligemma, config.expert, config.vision, config.vocab_size)


def load_pi0(source: str | Path, *, revision: str | None = None, token: str | bool | None = None,
             config: Pi0Config | None = None, dtype: str | None = None, device: torch.device | str = "cpu",
             reader: str = "pread", kind: str | None = None) -> Pi0:
    """Loads pi0 or pi0.5 (its config.json says which) from a local folder or a hub repo id (`lerobot/pi0_base`,
    `lerobot/pi05_base`, openpi conversions, our saves). `kind` ("pi0" / "pi05"): refuse the other kind.

    `dtype` ("bfloat16"/"float32"): None builds in `inference_dtype` (bf16 for pi0 even where the config says
    float32; pass "float32" to get fp32); the weights are cast while streaming."""
    from finetune.hub import resolve_folder

    folder = resolve_folder(source, revision=revision, token=token)
    cfg = config or read_config(folder, kind)
    if kind is not None:
        refuse_other_kind(cfg.kind, kind, str(source), f"config={cfg.name!r} is a {KIND_NAMES[cfg.kind]} model")
    cfg = cfg.replace(dtype=inference_dtype(cfg, dtype))
    model = build_model(cfg, "meta")
    load_weights_(model, folder, device=device, reader=reader, source=str(source))
    return model.eval()


@dataclass(frozen=True)
class WeightStream:
    """A pi0's weights in the hub layout, made one tensor at a time: what `save_pi0` writes. `specs`: hub key ->
    (shape, dtype); `produce(key)` returns that tensor (any device), called once per key in sorted key order.
    The policy export builds one from the training model (finetune.policy_export) so no second model is built."""

    config: Pi0Config  # written as config.json (its dtype: the weights' compute dtype)
    specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]]
    produce: Callable[[str], Tensor]


def model_weights(model: Pi0) -> WeightStream:
    """A plain (LoRA-free) model's state_dict as a WeightStream: the tied alias left out, the rest as stored."""
    sd = {k: v for k, v in model.state_dict().items() if k != TIED_ALIAS}
    return WeightStream(model.config, {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}, lambda k: sd[k])


def save_pi0(model: Pi0 | WeightStream, folder: Path, norm_stats: Mapping[str, Mapping[str, Any]] | None = None
             ) -> Path:
    """Writes config.json + model.safetensors in the hub layout (lm_head stored, tied alias and expert lm_head
    not), and `assets/<asset_id>/norm_stats.json` for each entry of norm_stats (asset id -> stats). `model`: a
    plain Pi0, or a WeightStream (streamed: one tensor in memory at a time)."""
    from finetune.normalize import save_norm_stats

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = model if isinstance(model, WeightStream) else model_weights(model)
    if TIED_ALIAS in weights.specs:
        raise ValueError(f"{TIED_ALIAS} is tied to {TIED_SOURCE}: store only the latter (the hub layout)")
    write_safetensors(folder / MODEL_FILE, weights.specs, weights.produce, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(weights.config.to_dict(), indent=2) + "\n")
    for asset_id, stats in (norm_stats or {}).items():
        save_norm_stats(folder / "assets" / asset_id / "norm_stats.json", stats)
    return folder


__all__ = [
    "BASE_REPOS", "CheckpointError", "CheckpointKeyError", "CheckpointKindError", "TensorEntry", "checkpoint_kind",
    "check_folder_kind", "refuse_other_kind", "WeightStream", "build_model", "check_keys",
    "checkpoint_key_shapes", "inference_dtype", "load_pi0", "load_weights_", "materialize_", "model_weights",
    "random_init_", "read_config", "read_safetensors_header", "save_pi0", "save_tensors", "write_safetensors",
    "torch_dtype",
]
