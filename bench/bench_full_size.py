"""The full-size pi0 path end to end on this machine (issue 20.2), each stage a real command in its own process:

    1. base       a synthetic full-size checkpoint in the exact `lerobot/pi0_base` layout (random weights, one
                  float32 model.safetensors, LeRobot's config.json with "dtype": "float32")
    2. record     a simulator dataset: `workbench record` with the scripted demonstrator (2 x 3 s)
    3. train      `workbench train --config pi0 --lora --base BASE --steps N --batch 1 --device cpu
                  --precision bf16-amp` (gradient checkpointing on, as the preset says) -> RUN/policy
    4. serve      `workbench serve RUN/policy`, queried by the unmodified openpi client: chunks timed
    5. trial      `workbench trials` on the simulator, in simulated time (--delay-ticks: the rig waits for each
                  chunk), one trial -> its trial episode

Per stage: wall time and peak resident memory (ru_maxrss of the stage's process tree). The tokenizer is a
stand-in with PaliGemma's exact size and special pieces (tests/finetune/tokenizer_helpers.py): this machine has no
network, and the base's weights are random anyway, so the figures are what they would be with the real files;
the policy's chunks are not (random weights, a few steps: the chunk check refuses them, the trial ends aborted,
which is what a wild policy must do). Needs ~35 GB of free disk (14 GB base, 7 GB policy, the run's checkpoint).

    python bench/bench_full_size.py --out /tmp/full_size          # ~25 min on a 2-core AMX CPU
    python bench/bench_full_size.py --out /tmp/full_size --keep   # leave the files
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

# LeRobot's config.json of lerobot/pi0_base (the keys the loader reads; dtype float32 as published)
LEROBOT_CONFIG = {
    "type": "pi0", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "dtype": "float32",
    "chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 10,
    "tokenizer_max_length": 48,
    "input_features": {"observation.images.base_0_rgb": {"type": "VISUAL", "shape": [3, 224, 224]},
                       "observation.images.left_wrist_0_rgb": {"type": "VISUAL", "shape": [3, 224, 224]},
                       "observation.images.right_wrist_0_rgb": {"type": "VISUAL", "shape": [3, 224, 224]},
                       "observation.state": {"type": "STATE", "shape": [32]}},
    "output_features": {"action": {"type": "ACTION", "shape": [32]}},
}


def stage(name: str, cmd: list[str], results: dict, env: dict | None = None, timeout: float = 7200) -> str:
    """Runs `cmd` in a child that reports the peak RSS of its own process tree (RUSAGE_CHILDREN: the largest
    descendant waited for), so each stage's figure is its own."""
    wrapper = ("import json, resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)\n"
               "print(p.stdout)\n"
               "print('@@' + json.dumps({'rc': p.returncode, 's': time.perf_counter() - t,\n"
               "      'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    print(f"== {name}: {' '.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}", flush=True)
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=ROOT)
    text = out.stdout
    tail = [ln for ln in text.splitlines() if ln.startswith("@@")]
    if not tail:
        raise SystemExit(f"{name}: no report\n{text[-3000:]}\n{out.stderr[-2000:]}")
    rep = json.loads(tail[-1][2:])
    body = text[: text.rfind("@@")]
    if rep["rc"] != 0:
        raise SystemExit(f"{name} failed (rc {rep['rc']}):\n{body[-4000:]}")
    results[name] = {"seconds": round(rep["s"], 1), "peak_gib": round(rep["peak_kib"] / 2 ** 20, 2)}
    print(f"   {results[name]['seconds']} s, peak {results[name]['peak_gib']} GiB", flush=True)
    return body


def write_base(folder: Path) -> None:
    """The stage-1 child: random full-size weights streamed into one float32 file in the hub's key layout."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pi0_load import write_checkpoint

    write_checkpoint(folder, "fp32", "pi0")
    (folder / "config.json").write_text(json.dumps(LEROBOT_CONFIG, indent=1))


def write_tokenizer(path: Path) -> None:
    from tokenizer_helpers import paligemma_like_tokenizer

    paligemma_like_tokenizer(path)


def time_chunks(policy: Path, n: int) -> None:
    """The stage-4 child: `workbench serve` as a child process, `n` chunks through openpi's own client."""
    import numpy as np
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from workbench.deploy.policy_launcher import LocalPolicyServer

    with LocalPolicyServer(policy, device="cpu", log=lambda line: None) as srv:
        client = WebsocketClientPolicy(host="127.0.0.1", port=srv.port)
        rng = np.random.default_rng(0)
        times = []
        for k in range(n + 1):  # the first call warms up
            obs = {"state": rng.normal(0, 0.1, 14), "prompt": "transfer the cube",
                   "images": {c: rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)
                              for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")}}
            t = time.perf_counter()
            out = client.infer(obs)
            times.append(time.perf_counter() - t)
            assert out["actions"].shape == (50, 14), out["actions"].shape
        print(json.dumps({"chunk_s": times[1:], "first_s": times[0]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the checkpoint, dataset and run")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        {"base": lambda p: write_base(Path(p)), "tokenizer": lambda p: write_tokenizer(Path(p)),
         "chunks": lambda p: time_chunks(Path(p), a.chunks)}[a.child[0]](a.child[1])
        return 0
    out = a.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free / 1e9
    if free < 35:
        print(f"warning: {free:.0f} GB free at {out}; this needs ~35 GB", file=sys.stderr)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"),
               HF_HUB_OFFLINE="1")
    me = [sys.executable, str(Path(__file__).resolve())]
    wb = [sys.executable, "-m", "workbench.cli"]
    results: dict = {}
    base, data, run, tok = out / "pi0_base", out / "cube", out / "run", out / "tokenizer.model"
    if not (base / "model.safetensors").is_file():
        stage("base", [*me, "--out", str(out), "--child", "base", str(base)], results, env)
    if not tok.is_file():
        stage("tokenizer", [*me, "--out", str(out), "--child", "tokenizer", str(tok)], results, env)
    if not data.is_dir():
        stage("record", [*wb, "record", "--rig", "sim-transfer-cube", "--dataset", str(data), "--episodes", "2",
                         "--episode-s", "3", "--task", "transfer the cube", "--no-squeeze"], results, env)
    if not (run / "policy" / "policy.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        body = stage("train", [*wb, "train", "--config", "pi0", "--lora", "--base", str(base), "--tokenizer",
                               str(tok), "--dataset", str(data), "--out", str(run), "--steps", str(a.steps),
                               "--batch", "1", "--device", "cpu", "--precision", "bf16-amp", "--workers", "0",
                               "--val-every", "0", "--save-every", str(a.steps), "--log-every", "1",
                               "--outcome", "all"], results, env)  # short recordings: not successes
        steps = [ln for ln in body.splitlines() if "step" in ln and "loss" in ln]
        print("   " + "\n   ".join(steps[-a.steps:]), flush=True)
    pol = run / "policy"
    files = {p.name: round(p.stat().st_size / 2 ** 30, 2) for p in pol.iterdir() if p.stat().st_size > 2 ** 20}
    cfg = json.loads((pol / "config.json").read_text())
    results["policy"] = {"files_gib": files, "dtype": cfg.get("dtype")}
    body = stage("serve", [*me, "--out", str(out), "--chunks", str(a.chunks), "--child", "chunks", str(pol)],
                 results, env)
    chunks = json.loads([ln for ln in body.splitlines() if ln.startswith("{")][-1])
    med = sorted(chunks["chunk_s"])[len(chunks["chunk_s"]) // 2]
    results["serve"].update(chunk_median_s=round(med, 2), chunks=[round(x, 2) for x in chunks["chunk_s"]],
                            first_chunk_s=round(chunks["first_s"], 2))
    trials = out / "trials"
    shutil.rmtree(trials, ignore_errors=True)
    body = stage("trial", [*wb, "trials", "--rig", "sim-transfer-cube", "--policy", str(pol), "--trials", "1",
                           "--time-limit-s", "2", "--mode", "sync", "--delay-ticks", "10", "--device", "cpu",
                           "--no-takeover", "--dataset", str(trials), "--seeds", "100000"], results, env)
    eps = sorted(trials.glob("episode_*.hdf5"))
    from recorder.reader import read_info

    info = read_info(eps[0])
    results["trial"].update(episode=str(eps[0]), steps=info.steps, ended_by=info.trial["ended_by"],
                            outcome=info.outcome, chunks=len(info.trial["chunks"]),
                            refusals=[r["kind"] for r in info.trial["refusals"]])
    print(json.dumps(results, indent=1))
    (out / "bench_full_size.json").write_text(json.dumps(results, indent=1) + "\n")
    if not a.keep:
        for p in (base, run):
            shutil.rmtree(p, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
