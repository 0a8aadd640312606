"""Policy trials on a rig at 50 Hz: what the control loop does while a policy drives the followers.

Per execution mode (sync / async / rtc) one trial of --seconds through the same TrialRunner, RigSession and
ControlLoop the app uses, with the policy served by `workbench serve` in a child process on loopback (the app's
default path) and the leaders following the followers (takeover ready). Prints:
- control loop period p50 / p99 (target: p99 within 1 ms of 20 ms, as in teleop) and overruns;
- end-to-end latency: observation -> the first action of the chunk computed from it handed to the safety layer;
- per-chunk inference (server) and round-trip (client) times;
- the largest joint jump at chunk boundaries (rad: the new chunk's first executed action vs the last command), and
  the mismatch (the same action vs what the replaced chunk planned for that slot: the discontinuity chunking adds;
  the jump also contains the trajectory's own step).

Default policy: a tiny pi0 (pi0_tiny, 2 training steps on two simulated episodes, built once into --cache), so the
figures measure the serving and scheduling path on this machine; give --policy for a real one.

    python bench/bench_trials.py --rig virtual --seconds 10 --modes sync,async,rtc
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recorder.store import DatasetStore  # noqa: E402
from workbench import events as ev  # noqa: E402
from workbench.config import load_rig_config  # noqa: E402
from workbench.deploy.policy_launcher import open_policy  # noqa: E402
from workbench.deploy.policy_source import ExecConfig  # noqa: E402
from workbench.backends import build_rig  # noqa: E402
from workbench.session import RigSession  # noqa: E402
from workbench.deploy.trials import TrialRunner, TrialSettings, start_trials  # noqa: E402


def tiny_policy(cache: Path) -> Path:
    """Record two short scripted episodes on the simulator and train pi0_tiny for 2 steps (once)."""
    policy = cache / "run" / "policy"
    if (policy / "policy.json").is_file():
        return policy
    cache.mkdir(parents=True, exist_ok=True)
    wb = [sys.executable, "-m", "workbench"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run(wb + ["record", "--rig", "sim-transfer-cube", "--dataset", str(cache / "data"), "--task",
                         "transfer the cube", "--episodes", "2", "--episode-s", "2", "--no-squeeze"],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    subprocess.run(wb + ["train", "--dataset", str(cache / "data"), "--out", str(cache / "run"), "--config", "tiny",
                         "--base", "random", "--steps", "2", "--batch", "2", "--device", "cpu", "--val-every", "0",
                         "--precision", "fp32", "--outcome", "all"],  # 2 s recordings: not successes
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return policy


def pct(xs, q) -> float:
    xs = [x for x in xs if x is not None]
    return float(np.percentile(xs, q)) if xs else float("nan")


def run_mode(rig_name: str, policy, mode: str, seconds: float, delay_ticks: int | None) -> dict:
    rig = build_rig(load_rig_config(rig_name))
    rig.connect()
    with tempfile.TemporaryDirectory() as tmp, RigSession(rig) as session:
        stopped: list = []
        session.subscribe(lambda e: stopped.append(e) if isinstance(e, ev.Stopped) else None)
        settings = TrialSettings(prompt="transfer the cube", trials=1, time_limit_s=seconds,
                                 execution=ExecConfig(mode=mode, delay_ticks=delay_ticks), stop_on_success=False,
                                 seeds=(0,) if rig.sim is not None else None)
        runner = TrialRunner(rig, DatasetStore(tmp), policy, settings)
        start_trials(session, runner)
        session.wait()
        if session.last_error is not None:
            raise session.last_error
        info = runner.results[0].info
        summary = stopped[-1].summary
        chunks = info.chunks
        jumps = [c["jump"] for c in chunks[1:] if c["start"] >= 0]
        return {"summary": summary, "chunks": len(chunks),
                "e2e_p50": pct([c["e2e_ms"] for c in chunks], 50), "e2e_p90": pct([c["e2e_ms"] for c in chunks], 90),
                "infer_p50": pct([c["infer_ms"] for c in chunks], 50),
                "rt_p50": pct([c["roundtrip_ms"] for c in chunks], 50),
                "delay_p50": pct([c["delay_ticks"] for c in chunks if c["delay_ticks"] >= 0], 50),
                "jump_max": max(jumps) if jumps else float("nan"),
                "jump_p50": pct(jumps, 50),
                "mis_p50": pct([c["mismatch"] for c in chunks[1:]], 50),
                "mis_max": pct([c["mismatch"] for c in chunks[1:]], 100)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rig", default="virtual")
    ap.add_argument("--policy", default=None, help="policy folder / hub id / ws:// URL (default: a tiny pi0)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench_trials_policy")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--modes", default="sync,async,rtc")
    ap.add_argument("--delay-ticks", type=int, default=None, help="simulated rigs only (see ExecConfig)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = args.policy or str(tiny_policy(args.cache))
    rig_cfg = load_rig_config(args.rig)
    # the tiny policy was trained on the simulated rig: same cameras and joints as the virtual one
    policy = open_policy(spec, rig=rig_cfg, device=args.device)
    print(f"rig {args.rig}, policy {spec} ({policy.metadata.get('model')}), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    try:
        print(f"{'mode':6} {'period p50':>10} {'p99':>8} {'overruns':>8} {'chunks':>6} {'e2e p50':>8} {'e2e p90':>8} "
              f"{'infer':>7} {'roundtrip':>9} {'delay':>5} {'jump max':>8} {'jump p50':>8} {'mism max':>8} {'mism p50':>8}")
        for mode in args.modes.split(","):
            r = run_mode(args.rig, policy, mode, args.seconds, args.delay_ticks)
            s = r["summary"]
            print(f"{mode:6} {s.period_p50_ms:8.3f}ms {s.period_p99_ms:6.3f}ms {s.overruns:8d} {r['chunks']:6d} "
                  f"{r['e2e_p50']:6.1f}ms {r['e2e_p90']:6.1f}ms {r['infer_p50']:5.1f}ms {r['rt_p50']:7.1f}ms "
                  f"{r['delay_p50']:5.0f} {r['jump_max']:8.4f} {r['jump_p50']:8.4f} {r['mis_max']:8.4f} {r['mis_p50']:8.4f}",
                  flush=True)
        print("period target: p99 within 1 ms of 20 ms; jump = |first executed action of a new chunk - the command "
              "before it| (rad, largest joint); mismatch = |that action - what the replaced chunk planned for the same "
              "slot| (rad): the discontinuity chunking adds")
    finally:
        policy.close()


if __name__ == "__main__":
    main()
