"""Peak RAM and time of a full-size pi0 LoRA run on the CPU and of its policy export (streamed from the training
model: no second model), then of `workbench policy export` redoing the export from the run's checkpoint.

Writes a synthetic random-weight base in the `lerobot/pi0_base` layout (bench_pi0_load.write_checkpoint: an fp32
file) whose config.json says float32, as pi0_base's does, and the tests' stand-in tokenizer.model with PaliGemma's
layout (tests/finetune/tokenizer_helpers.py: no network needed; `--dataset synthetic` never tokenizes a prompt),
then runs, each in a fresh child:

  1. `workbench train --config pi0 --lora --steps 3 --batch 1 --device cpu --precision bf16-amp` (the case that
     trained at ~15.6 GB and was OOM-killed at 22-23 GB while exporting). Training's peak is the child's VmHWM
     when the export starts (its first "exporting the policy folder" event); the peak is then reset
     (/proc/PID/clear_refs) and the export's own peak is the child's max RSS at exit (wait4);
  2. `workbench policy export RUN` after deleting RUN/policy: the peak while rebuilding the model, then the
     export's, the same way.

Needs ~14 GB (base) + ~6 GB (checkpoint) + ~7 GB (policy) of disk and ~16 GB of free RAM; ~15 minutes on 2 cores.
It builds the full-size model: run it alone, under the lock the other full-size jobs take:

    flock /tmp/fullsize.lock python bench/bench_export.py [--tmpdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from bench_pi0_load import write_checkpoint  # noqa: E402
from tokenizer_helpers import paligemma_like_tokenizer  # noqa: E402  (PaliGemma's layout, offline)

EXPORT_STARTS = "exporting the policy folder"


def status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


@dataclass
class Phases:
    """One child's run, split at the export's first Status event."""

    seconds: float = 0.0
    before_export_peak_kib: int = -1  # VmHWM when the export started (then reset)
    export_peak_kib: int = -1  # max RSS from the reset to the exit (wait4's ru_maxrss)
    export_seconds: float = 0.0
    sampled_export_max_kib: int = 0  # cross-check: VmRSS sampled every 50 ms during the export
    events: list[dict] = field(default_factory=list)
    stderr: str = ""


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, Phases]:
    ph = Phases()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {"export_t0": None, "export_t1": None}

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ph.events.append(e)
            print("   ", line.rstrip()[:160], flush=True)
            if state["export_t0"] is None and e.get("event") == "status" and e.get("text", "").startswith(
                    EXPORT_STARTS):
                ph.before_export_peak_kib = status_kib(proc.pid, "VmHWM")
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
                state["export_t0"] = time.monotonic()
            if e.get("event") in ("policy", "failed") and state["export_t0"] is not None:
                state["export_t1"] = time.monotonic()

    def read_stderr() -> None:
        assert proc.stderr is not None
        ph.stderr = proc.stderr.read()

    threads = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in threads:
        t.start()
    while True:  # reaped here, not by Popen: wait4 gives its rusage (the max RSS since the reset)
        if state["export_t0"] is not None and state["export_t1"] is None:
            ph.sampled_export_max_kib = max(ph.sampled_export_max_kib, status_kib(proc.pid, "VmRSS"))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            ph.export_peak_kib = usage.ru_maxrss
            break
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=30)
    ph.seconds = time.monotonic() - t0
    if state["export_t0"] is not None:
        ph.export_seconds = (state["export_t1"] or time.monotonic()) - state["export_t0"]
    return proc.returncode, ph


def gib(kib: int) -> str:
    return f"{kib / 2**20:.2f} GiB" if kib >= 0 else "n/a"


def check_policy(folder: Path) -> str:
    """The hub key layout and dtypes from the header (a strict load of 7 GB is left to load_policy's tests)."""
    import torch

    from finetune.checkpoint import build_model, checkpoint_key_shapes, read_config, read_safetensors_header
    from finetune.model.pi0 import param_dtype

    cfg = read_config(folder)
    entries, _ = read_safetensors_header(folder / "model.safetensors")
    want = checkpoint_key_shapes(build_model(cfg, "meta"))
    assert set(entries) == set(want), (set(entries) ^ set(want))
    assert all(tuple(entries[k].shape) == tuple(s) for k, s in want.items())
    names = {torch.bfloat16: "BF16", torch.float32: "F32"}
    assert all(entries[k].dtype == names[param_dtype(k, torch.bfloat16)] for k in entries)
    size = (folder / "model.safetensors").stat().st_size
    return f"config dtype {cfg.dtype}, {len(entries)} tensors in the hub layout, {size / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tmpdir", default=None, help="where the base, the run and the policy go")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the files (default: deleted at the end)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pi0_export_bench_", dir=args.tmpdir))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    try:
        t0 = time.perf_counter()
        base = root / "base"
        gb = write_checkpoint(base, "fp32", "pi0")
        cfg = json.loads((base / "config.json").read_text())
        (base / "config.json").write_text(json.dumps({**cfg, "dtype": "float32"}))  # as lerobot/pi0_base says
        print(f"wrote the fp32 base: {gb:.2f} GB in {time.perf_counter() - t0:.0f} s (config.json: float32)",
              flush=True)
        tok = paligemma_like_tokenizer(root / "tokenizer.model")
        run = root / "run"
        train_cmd = [sys.executable, "-m", "workbench.cli", "train", "--config", "pi0", "--lora", "--steps",
                     str(args.steps), "--batch", "1", "--device", "cpu", "--precision", "bf16-amp", "--base", str(base),
                     "--dataset", "synthetic", "--tokenizer", str(tok), "--out", str(run), "--workers", "0",
                     "--log-every", "1", "--val-every", "0", "--save-every", str(args.steps), "--json"]
        print("training:", " ".join(train_cmd[3:]), flush=True)
        rc, tr = run_child(train_cmd, env)
        if rc != 0:
            raise SystemExit(f"training failed ({rc}):\n{tr.stderr[-4000:]}")
        policy_line = check_policy(run / "policy")
        steps = [e for e in tr.events if e.get("event") == "step"]
        step_s = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steps, steps[1:])]

        shutil.rmtree(run / "policy")
        export_cmd = [sys.executable, "-m", "workbench.cli", "policy", "export", str(run), "--json"]
        print("re-export:", " ".join(export_cmd[3:]), flush=True)
        rc, rx = run_child(export_cmd, env)
        if rc != 0:
            raise SystemExit(f"re-export failed ({rc}):\n{rx.stderr[-4000:]}")
        reexport_line = check_policy(run / "policy")

        print(f"\nfull-size pi0 (3.5 B), LoRA, bf16-amp on the CPU, batch 1, {args.steps} steps; base config float32")
        print(f"{'':34} {'wall':>8} {'peak RSS':>10}")
        print(f"{'train (start -> export starts)':34} {tr.seconds - tr.export_seconds:7.0f}s "
              f"{gib(tr.before_export_peak_kib):>10}")
        print(f"{'  its export (streamed)':34} {tr.export_seconds:7.0f}s {gib(tr.export_peak_kib):>10}"
              f"   (sampled max {gib(tr.sampled_export_max_kib)})")
        print(f"{'re-export: rebuild the model':34} {rx.seconds - rx.export_seconds:7.0f}s "
              f"{gib(rx.before_export_peak_kib):>10}")
        print(f"{'  its export (streamed)':34} {rx.export_seconds:7.0f}s {gib(rx.export_peak_kib):>10}"
              f"   (sampled max {gib(rx.sampled_export_max_kib)})")
        if step_s:
            print(f"training step time (after the first): {sum(step_s) / len(step_s):.0f} s")
        print(f"policy after training: {policy_line}")
        print(f"policy re-exported:    {reexport_line}")
    finally:
        if args.keep:
            print(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
