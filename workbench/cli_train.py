"""`workbench train`: recorded episodes -> a fine-tuned pi0 policy folder; `workbench policy push`: to the hub;
`workbench policy export RUN`: the policy folder again from a run's checkpoint (finetune.run_export).

`--config NAME` picks a named preset (finetune.presets: model, base, LoRA, steps, batch, lr, intervals, ...); the
other options override single values of it. One GPU: runs in this process. `--gpus N`: this command re-runs itself
under torchrun, `--host user@box`: on a GPU machine over SSH (both finetune.launch), `--slurm CLUSTER`: as a batch
job on a SLURM cluster (finetune.cluster; `workbench cluster ...` follows, cancels and fetches it).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

from finetune import presets

EXIT_CANCELLED = 130


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (an option left out: the preset's value, said in the option's help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune pi0 on a dataset (one GPU, several with --gpus, a remote --host, or a SLURM cluster "
                      "with --slurm)",
        description="Fine-tune pi0 on recorded episodes and write a policy folder (OUT/policy) for the trials. "
                    "Progress: step, loss, lr, samples/s, ETA; OUT/metrics.jsonl has every event as JSON. "
                    "Ctrl-C writes a checkpoint, then stops; --resume continues exactly.",
        formatter_class=_Help)
    p.add_argument("--dataset", help="dataset folder (ours or LeRobot v3.0), a hub dataset id, or 'synthetic'")
    p.add_argument("--config", choices=presets.NAMES, default=presets.DEFAULT,
                   help="training preset (finetune/presets.py): "
                        + "; ".join(f"{x.name}: {x.label}" for x in presets.PRESETS)
                        + ". The options below override its values")
    p.add_argument("--base", help="hub id, local pi0 folder, an earlier run (runs/NAME) or policy folder, or "
                                  f"'{presets.RANDOM_BASE}' [default: the preset's: {presets.describe('base')}]")
    p.add_argument("--revision", help="hub revision of --base")
    p.add_argument("--out", required=True, help="run folder (runs/NAME)")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None,
                   help="LoRA (rank 16 on Gemma 2B, 32 on the action expert; fits a 24 GB card) instead of full "
                        f"fine-tuning [default: the preset's: {presets.describe('lora')}]")
    p.add_argument("--steps", type=int, help=f"optimizer steps [default: {presets.describe('steps')}]")
    p.add_argument("--batch", type=int, help=f"global batch size [default: {presets.describe('batch_size')}]")
    p.add_argument("--lr", type=float, help=f"peak learning rate [default: {presets.describe('lr')}]")
    p.add_argument("--warmup", type=int, help="warm-up steps [default: min(1000, steps/10)]")
    p.add_argument("--ema", type=float, default=None, help="EMA decay of the weights, e.g. 0.99 (off by default)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16-amp", "bf16-sr"),
                   help="auto: bf16 compute with fp32 master weights on CUDA, fp32 on the CPU; bf16-sr: bf16 "
                        f"weights with stochastic rounding (less memory) [default: {presets.describe('precision')}]")
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None,
                   help=f"gradient checkpointing [default: {presets.describe('gradient_checkpointing')}]")
    p.add_argument("--attention", choices=("sdpa", "flex", "eager"), default="sdpa")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--gpus", type=int, default=1, help="GPUs on this machine (runs under torchrun)")
    p.add_argument("--fsdp", action="store_true", help="with --gpus: shard the model (FSDP2) for full fine-tuning")
    p.add_argument("--host", help="run on a GPU machine over SSH (user@host); the dataset is sent with rsync")
    p.add_argument("--remote-dir", help="working folder on --host or on the cluster's shared filesystem (--slurm) "
                                        "[default: ~/workbench-runs, or the cluster profile's]")
    p.add_argument("--device", help=f"auto, cuda, cuda:N or cpu [default: {presets.describe('device')}]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes per GPU")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int,
                   help=f"validation interval, 0 = none [default: {presets.describe('val_every')}]")
    p.add_argument("--save-every", type=_at_least_one,
                   help=f"checkpoint interval [default: {presets.describe('save_every')}]")
    p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept")
    p.add_argument("--tokenizer", help="tokenizer.model file or repo [default: PaliGemma's (lerobot/pi0 at a pinned "
                                       "revision, else the gated google/paligemma-3b-pt-224); small and tiny: "
                                       "their own, trained into the run folder]")
    p.add_argument("--outcome", action="append",
                   help="only episodes with this outcome (repeatable: success, failure, partial, unlabeled), or "
                        f"'{presets.ALL_OUTCOMES}' for every label [default: "
                        f"{', '.join(presets.DEFAULT_OUTCOMES)}: failed demonstrations are not imitated]")
    p.add_argument("--quality", action="append", help="only episodes with this quality verdict (repeatable)")
    p.add_argument("--episode", action="append", help="only these episodes (repeatable)")
    p.add_argument("--prompt", choices=("task", "segment", "mix"), default="task",
                   help="prompt per frame: the task, the segment's text, or a mix")
    p.add_argument("--no-augment", action="store_true", help="no image augmentation")
    p.add_argument("--absolute-actions", action="store_true",
                   help="arm joints as absolute targets, not deltas from the state (openpi's pi0_aloha_sim; "
                        "default: deltas, as openpi's real-ALOHA configs)")
    p.add_argument("--cache-images", action=argparse.BooleanOptionalAction, default=None,
                   help="decode and resize every frame once and keep them in RAM (small models on a CPU, where "
                        "decoding costs more than the step); refused when it would not fit "
                        f"[default: {presets.describe('cache_images')}]")
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
    p.add_argument("--keep-run-data", action="store_true",
                   help="with --resume, when the dataset changed since the run started: go on with the run's own "
                        "train/validation split and normalization statistics (episodes that no longer exist are "
                        "dropped, new ones are not used) instead of refusing")
    p.add_argument("--json", action="store_true", help="print events as JSON lines (for programs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory estimate for --device (finetune/memory_model.py) and stop: nothing is "
                        "built, downloaded or written")
    add_tracking_options(p)
    add_slurm_options(p)
    p.set_defaults(func=run_train)

    pp = sub.add_parser("policy", help="policy folders: push to the hub, export again from a run's checkpoint",
                        description="Work with policy folders written by `workbench train`.")
    psub = pp.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    push = psub.add_parser("push", help="upload a policy folder as a hub model repo")
    push.add_argument("folder", help="policy folder (runs/NAME/policy)")
    push.add_argument("repo", help="hub repo id (owner/name)")
    push.add_argument("--public", action="store_true")
    push.set_defaults(func=run_push)
    exp = psub.add_parser(
        "export", help="write a run's policy folder again from its last checkpoint (or --step N)",
        description="Rebuild RUN_DIR's training model from train_config.json and a checkpoint and write "
                    "RUN_DIR/policy the way the end of training does (streamed: bf16 for pi0, LoRA merged, EMA "
                    "averages): after an export that failed (full disk, out of memory) or for an earlier step. "
                    "Needs the run's base checkpoint (and its dataset, for a run that did not record its data description).")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="run folder (runs/NAME)")
    exp.add_argument("--step", type=int, help="checkpoint step [default: the last]")
    exp.add_argument("--json", action="store_true", help="print events as JSON lines (for programs)")
    exp.set_defaults(func=run_policy_export)


# CLI option -> the preset field it overrides (None = not given: the preset's value)
PRESET_OPTIONS = {"base": "base", "lora": "lora", "steps": "steps", "batch": "batch_size", "lr": "lr",
                  "warmup": "warmup_steps", "ema": "ema_decay", "precision": "precision",
                  "grad_ckpt": "gradient_checkpointing", "val_every": "val_every", "save_every": "save_every",
                  "cache_images": "cache_images", "device": "device"}


def preset_from_args(args: argparse.Namespace) -> presets.TrainPreset:
    """--config's preset with the options given on the command line in place of its values."""
    return presets.preset(args.config).replace(**{f: getattr(args, a) for a, f in PRESET_OPTIONS.items()})


def _with_tracking(make_config):
    """config_from_args with the tracking options applied to whatever config it made (tracking_from_args)."""
    @functools.wraps(make_config)
    def config_with_tracking(args: argparse.Namespace):
        cfg = make_config(args)
        return dataclasses.replace(cfg, tracking=tracking_from_args(args, cfg.tracking))

    return config_with_tracking


@_with_tracking
def config_from_args(args: argparse.Namespace):  # -> finetune.train.TrainConfig
    from finetune.train import TrainConfig

    if args.keep_run_data and not args.resume:
        raise SystemExit("error: --keep-run-data goes with --resume (it keeps a resumed run's own split and "
                         "normalization statistics)")
    if not args.dataset:
        if args.resume and (Path(args.out) / "train_config.json").is_file():  # resume with the run's settings
            import dataclasses
            import json

            cfg = TrainConfig.from_json(json.loads((Path(args.out) / "train_config.json").read_text()))
            return dataclasses.replace(cfg, steps=args.steps or cfg.steps, out=args.out,
                                       num_workers=args.workers, device=args.device or cfg.device,
                                       keep_run_data=args.keep_run_data)
        raise SystemExit("error: --dataset is required (a dataset folder, a LeRobot dataset, or 'synthetic')")
    data = {"prompt": args.prompt, "augment": not args.no_augment, "val_fraction": args.val_fraction}
    for key, val in (("outcomes", outcomes_from_args(args.outcome)), ("quality", args.quality),
                     ("episodes", args.episode)):
        if val:
            data[key] = list(val)
    if args.trials != "exclude":  # the default stays out of train_config.json: earlier runs still resume
        data["trials"] = args.trials
    if args.absolute_actions:
        data["delta_actions"] = False
    return TrainConfig.from_preset(
        preset_from_args(args), dataset=args.dataset, out=args.out, data=data, revision=args.revision,
        attention=args.attention, compile=args.compile, fsdp=args.fsdp, seed=args.seed, num_workers=args.workers,
        log_every=args.log_every, keep_last=args.keep_last, tokenizer=args.tokenizer,
        rtc_max_delay=args.rtc_max_delay, keep_run_data=args.keep_run_data)


def outcomes_from_args(given: list[str] | None) -> list[str]:
    """--outcome as given -> the outcome filter: the default (successes) when left out, none for 'all'."""
    if not given:
        return list(presets.DEFAULT_OUTCOMES)
    if presets.ALL_OUTCOMES in given:
        if len(given) > 1:
            raise SystemExit(f"error: --outcome {presets.ALL_OUTCOMES} takes every label; it does not combine with "
                             f"--outcome {' / '.join(o for o in given if o != presets.ALL_OUTCOMES)}")
        return []
    return list(given)


def run_train(args: argparse.Namespace) -> int:
    if args.slurm or args.slurm_profile:
        return run_slurm(args)
    if args.host:
        from finetune.launch import run_remote

        return run_remote(args.host, _argv(args), remote_dir=args.remote_dir or "~/workbench-runs",
                          json_out=args.json)
    if args.gpus > 1 and "LOCAL_RANK" not in os.environ:
        from finetune.launch import run_torchrun

        return run_torchrun(_argv(args), args.gpus)
    cfg = config_from_args(args)
    said = memory_preflight(cfg, _printer(args.json))
    if args.dry_run:
        if said is None:
            print("no memory estimate: FSDP's shards are not modelled (finetune/memory_model.py)", flush=True)
        return 0
    from finetune.train import train

    return _run_job(lambda: train(cfg, emit=_printer(args.json), resume=args.resume), args.json)


def memory_preflight(cfg, emit) -> str | None:  # cfg: finetune.train.TrainConfig
    """Before the base is resolved or anything built: the memory estimate (finetune.memory_model) against the
    chosen device, as a status event: "memory: needs ~X GB on <device> (has Y GB) (breakdown)", or a warning with
    what to change when the run will not fit. Returns the text, None where it is not modelled (FSDP) or not this
    rank's to say."""
    from finetune import events as ev
    from finetune import memory_model

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("RANK", "0") != "0" or (world > 1 and cfg.fsdp):
        return None
    mc = _model_config(cfg)
    dev = memory_model.device_memory(cfg.device)
    kw = dict(lora=cfg.lora, precision=cfg.precision, batch=max(cfg.batch_size // world, 1),
              grad_ckpt=cfg.gradient_checkpointing, ema=cfg.optim.ema_decay is not None)
    est = memory_model.estimate(mc, **kw, device_kind=dev.kind if dev else "cuda", ddp=world > 1)
    warning = memory_model.fit_warning(mc, **kw, dev=dev)
    text = f"warning: {warning}" if warning else f"memory: {memory_model.fit_line(est, dev)} ({est.describe()})"
    emit(ev.Status(text))
    return text


def _model_config(cfg):  # -> finetune.model_config.Pi0Config, without downloading anything
    """The base's own config.json when the base is a local folder or one of our runs, else the preset's
    variant (a hub base is only read once downloaded, after this check)."""
    from finetune.model_config import Pi0Config

    folder = Path(cfg.base).expanduser()
    for f in (folder / "policy" / "config.json", folder / "config.json"):
        if cfg.base != presets.RANDOM_BASE and f.is_file():
            try:
                return Pi0Config.from_dict(json.loads(f.read_text()))
            except (ValueError, KeyError, TypeError):
                break  # not a pi0 config: the trainer says so with the fix
    return Pi0Config.variant(cfg.model)


def _printer(json_out: bool):  # -> Callable[[finetune.events.Event], None]
    """Events to stdout: JSON lines (--json, for programs and the Train tab) or one human line each."""
    from finetune import events as ev

    def emit(e: ev.Event) -> None:
        if json_out:
            print(ev.to_json(e), flush=True)
        else:
            line = ev.human(e)
            if line:
                print(line, flush=True)

    return emit


def run_policy_export(args: argparse.Namespace) -> int:
    from finetune.run_export import export_run
    return _run_job(lambda: export_run(Path(args.run_dir), step=args.step, emit=_printer(args.json)), args.json)


def _run_job(job, json_events: bool) -> int:
    """A training or export job: 0 done, 2 failed (the one line; with --json the Failed event said it), cancelled."""
    from finetune.train import TrainError

    try:
        job()
    except TrainError as e:
        if not json_events:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line as typed (tests and programs may set args.argv)."""
    return list(getattr(args, "argv", None) or sys.argv[1:])


def run_push(args: argparse.Namespace) -> int:
    from finetune.policy_folder import push_policy

    def progress(text: str, fraction: float) -> None:
        print(f"{100 * fraction:5.1f}%  {text}", flush=True)

    url = push_policy(Path(args.folder), args.repo, private=not args.public, progress=progress)
    print(url)
    return 0


# ====================================================================================================== tracking
def add_tracking_options(p: argparse.ArgumentParser) -> None:
    """--track / --wandb-project / --wandb-mode (finetune.tracking): off unless given; nothing leaves the machine
    unless --wandb-mode online."""
    from finetune import tracking

    p.add_argument("--track", action="append", choices=(*tracking.BACKENDS, "none"), metavar="TRACKER",
                   help="tensorboard | wandb | none: log metrics, the configuration and the dataset fingerprint "
                        "to TensorBoard event files (OUT/tensorboard; `tensorboard --logdir OUT/tensorboard`) and/or "
                        "Weights & Biases (OUT/wandb); repeatable; 'none' turns it off for a resumed run "
                        "[default: off; with --resume: the run's own]")
    p.add_argument("--wandb-project", metavar="NAME",
                   help=f"with --track wandb: the W&B project [default: {tracking.DEFAULT_PROJECT}]")
    p.add_argument("--wandb-mode", choices=tracking.WANDB_MODES,
                   help="with --track wandb: offline writes OUT/wandb only (upload later with `wandb sync`); online "
                        "streams to W&B (needs `wandb login` on the machine that trains) [default: offline]")


def tracking_from_args(args: argparse.Namespace, current):  # -> finetune.tracking.TrackingConfig
    """The run's tracking from --track / --wandb-*: `current` (the run's own on a resume, else off) where they are
    left out, so a resumed run keeps logging to the same TensorBoard folder and W&B run."""
    from finetune.tracking import TrackingConfig

    track, project, mode = getattr(args, "track", None), getattr(args, "wandb_project", None), \
        getattr(args, "wandb_mode", None)
    stored = Path(args.out) / "train_config.json"
    if track is None and args.resume and not current.on and stored.is_file():  # --resume with full options
        try:
            current = TrackingConfig.from_json(json.loads(stored.read_text()).get("tracking"))
        except (ValueError, AttributeError):
            pass  # an unreadable train_config.json: the trainer says so
    if track is not None and "none" in track:
        if len(track) > 1:
            raise SystemExit("error: --track none turns tracking off; it does not combine with --track "
                             + " / ".join(t for t in track if t != "none"))
        backends: tuple[str, ...] = ()
    else:
        backends = tuple(track) if track is not None else current.backends
    if (project is not None or mode is not None) and "wandb" not in backends:
        raise SystemExit(f"error: {'--wandb-project' if project is not None else '--wandb-mode'} goes with "
                         "--track wandb")
    try:
        return TrackingConfig(backends=backends, wandb_project=project or current.wandb_project,
                              wandb_mode=mode or current.wandb_mode)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


# ====================================================================================================== SLURM
# --slurm option -> the ClusterProfile field it sets (finetune.cluster.profile); None = not given: the profile's
SLURM_FIELDS = {"remote_dir": "remote_dir", "partition": "partition", "account": "account", "qos": "qos",
                "nodes": "nodes", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task", "mem": "mem",
                "time_limit": "time_limit", "constraint": "constraint", "extra_sbatch": "extra_sbatch",
                "setup": "setup", "container": "container", "cluster_python": "python", "hf_home": "hf_home",
                "signal_lead": "signal_lead_s"}
# this side's options, never passed to the trainer on the cluster
SLURM_VALUE_OPTIONS = ("--slurm", "--slurm-profile", "--save-profile", "--partition", "--account", "--qos", "--nodes",
                       "--gpus-per-node", "--cpus-per-task", "--mem", "--time", "--constraint", "--sbatch", "--setup",
                       "--container", "--cluster-python", "--hf-home", "--signal-lead", "--poll-s")
SLURM_FLAGS = ("--online-nodes", "--no-requeue", "--detach", "--dry-run")


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """--slurm and the job's options (finetune.cluster.ClusterProfile); given ones override the profile's."""
    from finetune.cluster import PROFILE_FIELDS

    g = p.add_argument_group(
        "SLURM cluster", "Train as a batch job: the dataset (and a local base) go to the cluster's shared filesystem "
        "with rsync, the job runs the trainer under torchrun (one task per node, one process per GPU), checkpoints "
        "and requeues itself before its time limit, and the run folder comes home when it ends (checkpoints stay "
        "there). Ctrl-C leaves the job running: `workbench cluster follow|cancel|fetch OUT`.")
    g.add_argument("--slurm", metavar="CLUSTER",
                   help="a saved cluster profile's name, a login node (user@login-node or an ~/.ssh/config alias), "
                        "or 'local' when this machine is the login node (no SSH)")
    g.add_argument("--slurm-profile", metavar="NAME", help="a saved cluster profile (same as --slurm NAME)")
    g.add_argument("--save-profile", metavar="NAME",
                   help="save these cluster options as profile NAME (~/.config/aloha-workbench/clusters/NAME.toml)")

    def opt(flag: str, dest: str, **kw) -> None:
        g.add_argument(flag, dest=dest, help=PROFILE_FIELDS[SLURM_FIELDS[dest]].metadata["help"], **kw)

    opt("--partition", "partition")
    opt("--account", "account")
    opt("--qos", "qos")
    opt("--nodes", "nodes", type=_at_least_one, metavar="N")
    opt("--gpus-per-node", "gpus_per_node", type=int, metavar="N")
    opt("--cpus-per-task", "cpus_per_task", type=_at_least_one, metavar="N")
    opt("--mem", "mem", metavar="SIZE")
    opt("--time", "time_limit", metavar="LIMIT")
    opt("--constraint", "constraint")
    opt("--sbatch", "extra_sbatch", action="append", metavar="OPTION")
    opt("--setup", "setup", action="append", metavar="LINE")
    opt("--container", "container", metavar="IMAGE")
    opt("--cluster-python", "cluster_python", metavar="CMD")
    opt("--hf-home", "hf_home", metavar="DIR")
    opt("--signal-lead", "signal_lead", type=int, metavar="S")
    g.add_argument("--online-nodes", action="store_true", default=None,
                   help="the compute nodes can reach the hub (no downloads on the login node, no HF_HUB_OFFLINE)")
    g.add_argument("--no-requeue", action="store_true", default=None,
                   help="do not requeue the job on preemption or at its time limit (it still checkpoints)")
    g.add_argument("--detach", action="store_true", help="submit and return; follow later with `workbench cluster "
                                                          "follow OUT`")
    g.add_argument("--poll-s", type=float, default=10.0, help="seconds between looks at the job")


def slurm_profile_from_args(args: argparse.Namespace):  # -> finetune.cluster.ClusterProfile
    """The saved profile --slurm / --slurm-profile names (else a login node) with the options given here."""
    from finetune.cluster import ClusterProfile, ProfileError, load_profile
    from finetune.cluster.profile import profile_path

    if args.slurm and args.slurm_profile:
        raise SystemExit("error: give --slurm or --slurm-profile, not both")
    name = args.slurm_profile or args.slurm
    try:
        if args.slurm_profile or ("/" not in name and profile_path(name).is_file()):
            base = load_profile(name)
        else:
            base = ClusterProfile(login="" if name == "local" else name)
        changes = {field: getattr(args, dest) for dest, field in SLURM_FIELDS.items()}
        if args.online_nodes:
            changes["offline_nodes"] = False
        if args.no_requeue:
            changes["requeue"] = False
        if args.save_profile:
            changes["name"] = args.save_profile
        return base.replace(**changes).check()
    except ProfileError as e:
        raise SystemExit(f"error: {e}") from None


def run_slurm(args: argparse.Namespace) -> int:
    """`workbench train ... --slurm CLUSTER`: submit, then follow the job to its end and fetch the run folder
    (--detach: submit only; --dry-run: print the job script and `sbatch --test-only`'s verdict)."""
    from finetune import cluster
    from finetune.cluster import profile as cluster_profile
    from finetune.launch import drop_options

    profile = slurm_profile_from_args(args)
    if args.save_profile:
        path = cluster_profile.save_profile(profile)
        print(f"saved cluster profile {path}", file=sys.stderr, flush=True)
    argv = [a for a in drop_options(_argv(args), SLURM_VALUE_OPTIONS) if a not in SLURM_FLAGS]
    emit = cluster_printer(args.json)
    try:
        sub = cluster.submit_training(profile, argv, emit=emit, dry_run=args.dry_run)
        if args.dry_run:
            print(sub.script, end="")
            print(f"# sbatch --test-only: {sub.test_only}", flush=True)
            return 0
        assert sub.job is not None
        if args.detach:
            print(f"job {sub.job.job_id} submitted; follow it with `workbench cluster follow {sub.job.local_run}`",
                  file=sys.stderr, flush=True)
            return 0
        return follow_job(sub.job, emit, args.poll_s)
    except cluster.SlurmError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


def follow_job(job, emit, poll_s: float) -> int:  # job: finetune.cluster.ClusterJob
    """Follows a job to its end and fetches its run folder; Ctrl-C leaves the job running. The exit status:
    0 finished, 130 cancelled / preempted (resumable) or detached, 2 failed."""
    from finetune import cluster

    try:
        status = cluster.follow(job, emit, poll_s=poll_s)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job.job_id} goes on. `workbench cluster follow {job.local_run}` picks it "
              f"up again, `workbench cluster cancel {job.local_run}` stops it.", file=sys.stderr, flush=True)
        return EXIT_CANCELLED
    cluster.fetch(job, emit)
    return cluster.exit_code(status)


def cluster_printer(json_out: bool):  # -> Callable[[finetune.cluster.ClusterEvent], None]
    """Cluster events to stdout: JSON lines (--json: the trainer's events, "slurm" job states, "log" lines) or
    one human line each (log lines on stderr)."""
    from finetune import cluster
    from finetune import events as ev

    def emit(e) -> None:
        if json_out:
            print(cluster.to_json(e), flush=True)
        elif isinstance(e, cluster.JobStatus):
            print(e.describe(), flush=True)
        elif isinstance(e, cluster.LogLine):
            print(e.text, file=sys.stderr, flush=True)
        else:
            line = ev.human(e)
            if line:
                print(line, flush=True)

    return emit
