"""Peak RAM and time to load the full-size pi0 from safetensors (fp32 and bf16 files) into a bf16 policy.

Writes synthetic random-weight checkpoints in the exact hub layout (lm_head stored, tied embedding absent,
expert lm_head present: 3,501,372,176 tensors' worth) to a temporary folder, loads each in a fresh child process
(so its peak RSS, VmHWM, is the load's alone), prints the figures and deletes the files.
Needs ~14 GB (fp32) + ~7 GB (bf16) of free disk, one file at a time; takes a few minutes.

    python bench/bench_pi0_load.py                       # fp32 and bf16 files, both readers
    python bench/bench_pi0_load.py --files bf16 --readers pread
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERT_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(folder: str, dtype: str, reader: str, variant: str) -> None:
    import torch

    from finetune.checkpoint import build_model, load_weights_
    from finetune.model_config import Pi0Config

    base = status_kib("VmRSS")
    t0 = time.perf_counter()
    model = build_model(Pi0Config.variant(variant).replace(dtype=dtype), "meta")
    load_weights_(model, Path(folder), device="cpu", reader=reader)
    dt = time.perf_counter() - t0
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert not any(p.is_meta for p in model.parameters())
    print(json.dumps({"seconds": dt, "vmhwm_kib": status_kib("VmHWM"), "rss_anon_kib": status_kib("RssAnon"),
                      "rss_file_kib": status_kib("RssFile"), "base_rss_kib": base, "model_bytes": model_bytes,
                      "torch_threads": torch.get_num_threads()}))


def write_checkpoint(folder: Path, file_dtype: str, variant: str) -> float:
    import torch

    from finetune.checkpoint import build_model, checkpoint_key_shapes, write_safetensors
    from finetune.model_config import Pi0Config

    cfg = Pi0Config.variant(variant)
    shapes = checkpoint_key_shapes(build_model(cfg, "meta"))
    shapes[EXPERT_HEAD] = (cfg.vocab_size, cfg.expert.width)  # stored on the hub; the loader must skip it
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[file_dtype]
    gen = torch.Generator().manual_seed(0)

    def produce(key: str) -> torch.Tensor:
        return torch.empty(shapes[key], dtype=dtype).normal_(0.0, 0.02, generator=gen)

    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", {k: (s, dtype) for k, s in shapes.items()}, produce,
                      metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    return (folder / "model.safetensors").stat().st_size / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--readers", nargs="+", default=["pread", "safe_open"], choices=["pread", "safe_open"])
    ap.add_argument("--target", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--variant", default="pi0")
    ap.add_argument("--tmpdir", default=None, help="where to write the synthetic checkpoints")
    ap.add_argument("--child", nargs=4, metavar=("FOLDER", "DTYPE", "READER", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    root = Path(tempfile.mkdtemp(prefix="pi0_load_bench_", dir=args.tmpdir))
    rows = []
    try:
        for fd in args.files:
            folder = root / fd
            t0 = time.perf_counter()
            gb = write_checkpoint(folder, fd, args.variant)
            print(f"wrote {fd} checkpoint: {gb:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
            for reader in args.readers:
                out = subprocess.run([sys.executable, __file__, "--child", str(folder), args.target, reader,
                                      args.variant], capture_output=True, text=True, cwd=ROOT)
                if out.returncode != 0:
                    print(out.stdout, out.stderr, file=sys.stderr)
                    raise SystemExit(f"load failed ({fd}, {reader})")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                model_gib = r["model_bytes"] / 2**30
                peak_gib = r["vmhwm_kib"] / 2**20
                rows.append((fd, gb, reader, r["seconds"], model_gib, peak_gib, r["rss_anon_kib"] / 2**20,
                             r["rss_file_kib"] / 2**20))
                print(f"  {reader:9s}: {r['seconds']:6.1f} s, model {model_gib:.2f} GiB, peak RSS {peak_gib:.2f} GiB "
                      f"({peak_gib / model_gib:.2f}x model), end anon {r['rss_anon_kib'] / 2**20:.2f} GiB, "
                      f"end file-backed {r['rss_file_kib'] / 2**20:.2f} GiB", flush=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ntarget dtype {args.target}; peak RSS = VmHWM of a fresh process (includes Python + torch, ~0.3 GiB)")
    print(f"{'file':>5} {'GB':>6} {'reader':>9} {'s':>6} {'model GiB':>9} {'peak GiB':>8} {'peak/model':>10}")
    for fd, gb, reader, s, m, p, _, _ in rows:
        print(f"{fd:>5} {gb:6.2f} {reader:>9} {s:6.1f} {m:9.2f} {p:8.2f} {p / m:10.2f}")


if __name__ == "__main__":
    main()
