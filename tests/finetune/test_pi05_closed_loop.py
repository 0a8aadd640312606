"""The closed loop with the pi0.5 preset starts and runs: scripted demonstrations -> `workbench train --config
pi05-tiny` (child process) -> a trial through `workbench serve` (child process) on the MuJoCo rig, at the smallest
scale (one 1 s demonstration, two training steps, one trial; ~35 s on 2 cores), through the `ClosedLoopConfig` that
`workbench closed-loop --config pi05-tiny ...` builds. A pipeline check, not a success rate: two training steps give
wild chunks, so the chunk check's tolerances are opened (as tests/workbench/test_closed_loop.py does for its tiny
model; the safety layer's caps stay) and the latency is a fixed 2 ticks, so a slow machine cannot make the chunks
late. The measured loops, pi0 and pi0.5, are in tests/workbench/test_closed_loop.py (marked closed_loop)."""
from __future__ import annotations

import json

import pytest

from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.closed_loop import ClosedLoop, ClosedLoopConfig

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)


def test_closed_loop_runs_the_pi05_tiny_preset_end_to_end(tmp_path, capsys):
    from workbench.cli import build_parser

    argv = ["closed-loop", "--task", "sim-transfer-cube", "--demos", "1", "--trials", "1", "--config", "pi05-tiny",
            "--steps", "2", "--batch", "2", "--episode-s", "1", "--demo-seeds", "0", "--trial-seeds", "0",
            "--allow-overlap", "--mode", "async", "--delay-ticks", "2", "--train-arg=--workers=0",
            "--out", str(tmp_path / "loop")]
    args = build_parser().parse_args(argv)  # what workbench/cli_closed_loop.py makes of the command line
    assert args.config == "pi05-tiny"
    cfg = ClosedLoopConfig(task=args.task, demos=args.demos, trials=args.trials, out=str(args.out), model=args.config,
                           steps=args.steps, batch=args.batch, demo_seeds=(0,), trial_seeds=(0,), allow_overlap=True,
                           mode=args.mode, delay_ticks=args.delay_ticks, episode_s=args.episode_s,
                           train_args=tuple(args.train_arg),
                           chunk_limits=ChunkLimits(first_action_steps=1e9, velocity_tolerance=1e9,
                                                    limit_tolerance=1e9, trained_range=False))
    lines: list[str] = []
    report = ClosedLoop(cfg, say=lines.append).run()
    assert any("round 1: training pi05-tiny from random for 2 steps" in s for s in lines), lines
    (r1,) = report.rounds
    assert r1.n == 1 and r1.infer_ms_p50 is not None, r1
    assert r1.trials[0]["outcome"] in ("success", "failure"), r1.trials  # ran to its end, not aborted
    saved = json.loads((tmp_path / "loop" / "closed_loop.json").read_text())
    assert saved["config"]["model"] == "pi05-tiny" and saved["rounds"][0]["n"] == 1
    policy = tmp_path / "loop" / "round1" / "run" / "policy"
    mc = json.loads((policy / "config.json").read_text())
    assert mc["pi05"] is True and mc["name"] == "pi05_tiny"
    tc = json.loads((policy / "transforms.json").read_text())
    assert (tc["normalization"], tc["discrete_state_input"], tc["prompt_state_dims"]) == ("quantile", True, 14)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["closed-loop", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "pi05-small, pi05-tiny, pi05 / pi05-lora" in help_
