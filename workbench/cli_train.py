"""`workbench train`: recorded episodes -> a fine-tuned pi0 policy folder; `workbench policy push`: to the hub.

One GPU: runs in this process. `--gpus N`: this command re-runs itself under `torchrun --nproc-per-node N`
(PyTorch's launcher). `--host user@box`: the same command runs on a GPU machine over SSH (finetune.remote).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

EXIT_CANCELLED = 130


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune pi0 on a dataset (one GPU, several with --gpus, or a remote --host)",
        description="Fine-tune pi0 on recorded episodes and write a policy folder (OUT/policy) for the trials. "
                    "Progress: step, loss, lr, samples/s, ETA; OUT/metrics.jsonl has every event as JSON. "
                    "Ctrl-C writes a checkpoint, then stops; --resume continues exactly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", help="dataset folder (ours or LeRobot v3.0), a hub dataset id, or 'synthetic'")
    p.add_argument("--base", default=None,
                   help="hub id, local pi0 folder, an earlier run (runs/NAME) or policy folder, or 'random' "
                        "[default: lerobot/pi0_base; random with --config tiny]")
    p.add_argument("--revision", help="hub revision of --base")
    p.add_argument("--out", required=True, help="run folder (runs/NAME)")
    p.add_argument("--config", choices=("pi0", "small", "tiny"), default="pi0",
                   help="model size: pi0 (needs a GPU); small (1.6 M parameters, the CPU closed loop) or tiny "
                        "(the unit-test model) train on a CPU")
    p.add_argument("--lora", action="store_true",
                   help="LoRA (rank 16 on Gemma 2B, 32 on the action expert; fits a 24 GB card) instead of full "
                        "fine-tuning")
    p.add_argument("--steps", type=int, help="optimizer steps [default: 20000; tiny: 200]")
    p.add_argument("--batch", type=int, help="global batch size [default: 32; tiny: 4]")
    p.add_argument("--lr", type=float, help="peak learning rate [default: 2.5e-5; tiny: 3e-3]")
    p.add_argument("--warmup", type=int, help="warm-up steps [default: min(1000, steps/10)]")
    p.add_argument("--ema", type=float, default=None, help="EMA decay of the weights, e.g. 0.99 (off by default)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16-amp", "bf16-sr"), default="auto",
                   help="auto: bf16 compute with fp32 master weights on CUDA, fp32 on the CPU; bf16-sr: bf16 "
                        "weights with stochastic rounding (less memory)")
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None,
                   help="gradient checkpointing [default: on for pi0, off for tiny]")
    p.add_argument("--attention", choices=("sdpa", "flex", "eager"), default="sdpa")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--gpus", type=int, default=1, help="GPUs on this machine (runs under torchrun)")
    p.add_argument("--fsdp", action="store_true", help="with --gpus: shard the model (FSDP2) for full fine-tuning")
    p.add_argument("--host", help="run on a GPU machine over SSH (user@host); the dataset is sent with rsync")
    p.add_argument("--remote-dir", default="~/workbench-runs", help="working folder on --host")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes per GPU")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int, help="validation interval, 0 = none [default: 1000; tiny: 50]")
    p.add_argument("--save-every", type=_at_least_one, help="checkpoint interval [default: 1000; tiny: 50]")
    p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept")
    p.add_argument("--tokenizer", help="tokenizer.model file or repo [default: lerobot/pi0's; tiny: its own]")
    p.add_argument("--outcome", action="append", help="only episodes with this outcome (repeatable)")
    p.add_argument("--quality", action="append", help="only episodes with this quality verdict (repeatable)")
    p.add_argument("--episode", action="append", help="only these episodes (repeatable)")
    p.add_argument("--prompt", choices=("task", "segment", "mix"), default="task",
                   help="prompt per frame: the task, the segment's text, or a mix")
    p.add_argument("--no-augment", action="store_true", help="no image augmentation")
    p.add_argument("--cache-images", action="store_true",
                   help="decode and resize every frame once and keep them in RAM (small models on a CPU, where "
                        "decoding costs more than the step); refused when it would not fit")
    p.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out for validation")
    p.add_argument("--trials", choices=("exclude", "corrections", "all"), default="exclude",
                   help="trial episodes (policy rollouts): leave out, only the operator's correction spans "
                        "(HG-DAgger), or every step (with --outcome success: imitate successful rollouts)")
    p.add_argument("--rtc-max-delay", type=int, default=0, metavar="N",
                   help="training-time real-time chunking: simulated inference delay in control ticks, for "
                        "policies that will run with --mode rtc (each sample's first 0..N actions are given "
                        "clean and left out of the loss) [default: 0 = off]")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (alone: with the run's own settings)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines (for programs)")
    p.set_defaults(func=run_train)

    pp = sub.add_parser("policy", help="policy folders: push to the hub",
                        description="Work with policy folders written by `workbench train`.")
    psub = pp.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    push = psub.add_parser("push", help="upload a policy folder as a hub model repo")
    push.add_argument("folder", help="policy folder (runs/NAME/policy)")
    push.add_argument("repo", help="hub repo id (owner/name)")
    push.add_argument("--public", action="store_true")
    push.set_defaults(func=run_push)


def config_from_args(args: argparse.Namespace):  # -> finetune.train.TrainConfig
    from finetune.precision import OptimConfig
    from finetune.train import CONFIGS, TrainConfig

    tiny = args.config != "pi0"  # the random-init CPU models
    preset = CONFIGS[args.config]
    steps = args.steps or (200 if tiny else 20_000)
    warmup = args.warmup if args.warmup is not None else min(1000, steps // 10)
    lr = args.lr or (3e-3 if tiny else 2.5e-5)
    optim = OptimConfig(peak_lr=lr, end_lr=lr / 10, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
                        ema_decay=args.ema)
    data = {"prompt": args.prompt, "augment": not args.no_augment, "val_fraction": args.val_fraction}
    if args.cache_images:
        data["cache_images"] = True
    for key, val in (("outcomes", args.outcome), ("quality", args.quality), ("episodes", args.episode)):
        if val:
            data[key] = list(val)
    if args.trials != "exclude":  # the default stays out of train_config.json: earlier runs still resume
        data["trials"] = args.trials
    if not args.dataset:
        if args.resume and (Path(args.out) / "train_config.json").is_file():  # resume with the run's settings
            import dataclasses
            import json

            from finetune.train import TrainConfig as TC

            cfg = TC.from_json(json.loads((Path(args.out) / "train_config.json").read_text()))
            return dataclasses.replace(cfg, steps=args.steps or cfg.steps, out=args.out,
                                       num_workers=args.workers, device=args.device)
        raise SystemExit("error: --dataset is required (a dataset folder, a LeRobot dataset, or 'synthetic')")
    return TrainConfig(
        dataset=args.dataset,
        out=args.out,
        base=args.base or preset.get("base", "lerobot/pi0_base"),
        revision=args.revision,
        model=preset["model"],
        lora=args.lora,
        steps=steps,
        batch_size=args.batch or (4 if tiny else 32),
        optim=optim,
        precision=args.precision if args.precision != "auto" else preset.get("precision", "auto"),
        gradient_checkpointing=args.grad_ckpt if args.grad_ckpt is not None else preset.get(
            "gradient_checkpointing", True),
        attention=args.attention,
        compile=args.compile,
        fsdp=args.fsdp,
        seed=args.seed,
        num_workers=args.workers,
        log_every=args.log_every,
        # `is None`, not `or`: --val-every 0 means no validation, not the default
        val_every=args.val_every if args.val_every is not None else (50 if tiny else 1000),
        save_every=args.save_every if args.save_every is not None else (50 if tiny else 1000),
        keep_last=args.keep_last,
        device=args.device,
        tokenizer=args.tokenizer,
        data=data,
        rtc_max_delay=args.rtc_max_delay,
    )


def run_train(args: argparse.Namespace) -> int:
    if args.host:
        from finetune.remote import run_remote

        return run_remote(args.host, _argv(args), remote_dir=args.remote_dir, json_out=args.json)
    if args.gpus > 1 and "LOCAL_RANK" not in os.environ:
        return _torchrun(args)
    cfg = config_from_args(args)
    from finetune import events as ev
    from finetune.train import TrainError, train

    def emit(e: ev.Event) -> None:
        if args.json:
            print(ev.to_json(e), flush=True)
        else:
            line = ev.human(e)
            if line:
                print(line, flush=True)

    try:
        train(cfg, emit=emit, resume=args.resume)
    except TrainError as e:
        if not args.json:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    return 0


def _torchrun(args: argparse.Namespace) -> int:
    """Re-runs this command under torchrun (one process per GPU); progress comes from rank 0."""
    rest = _drop_option(_argv(args), "--gpus")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.gpus}",
           "-m", "workbench.cli", *rest]
    return subprocess.call(cmd)


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line as typed (tests and programs may set args.argv)."""
    return list(getattr(args, "argv", None) or sys.argv[1:])


def _drop_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


def run_push(args: argparse.Namespace) -> int:
    from finetune.policy_folder import push_policy

    def progress(text: str, fraction: float) -> None:
        print(f"{100 * fraction:5.1f}%  {text}", flush=True)

    url = push_policy(Path(args.folder), args.repo, private=not args.public, progress=progress)
    print(url)
    return 0
