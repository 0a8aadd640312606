"""Experiment tracking (finetune.tracking): real tiny training runs write TensorBoard event files and W&B offline
runs, read back with the libraries' own readers (TensorBoard's EventAccumulator; W&B's protobuf records), equal
to the run's metrics.jsonl; resumed runs continue the same folder and W&B run; off means nothing written or
imported; a missing package or W&B login is a clear error before the model is built.

tensorboard and wandb come with the test extra (pyproject.toml: test -> tracking); no skip when they are missing,
so CI cannot pass these without them."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from finetune import events as ev
from finetune.tracking import TrackingConfig
from train_helpers import ROOT, TINY_ARGS, env, events, sim_dataset, step_losses, train_cmd


def tracking_env(tmp: Path) -> dict[str, str]:
    """No network, no login, nothing written outside tmp: W&B's config, cache and data folders there."""
    e = env()
    for k in [k for k in e if k.startswith("WANDB_")] + ["NETRC"]:
        e.pop(k, None)
    for k, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_CACHE_DIR", "cache"),
                   ("WANDB_DATA_DIR", "data")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        e[k] = str(tmp / sub)
    e["WANDB_MODE"] = "offline"
    e["NETRC"] = str(tmp / "no-netrc")
    return e


def train(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), env=tracking_env(tmp), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def sim_args(steps: int) -> list[str]:
    """Episodes recorded on the simulated rig (a real dataset fingerprint), validation every 2 steps."""
    return [*TINY_ARGS[:-2], "--val-every", "2", "--val-fraction", "0.34", "--dataset", str(sim_dataset()),
            "--outcome", "all", "--steps", str(steps), "--save-every", "2", "--keep-last", "5"]


def forget_last_checkpoint(run: Path) -> None:
    """As if the run had died after logging its last steps but before their checkpoint: the resume repeats them."""
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    shutil.rmtree(last)


def validations(run: Path) -> dict[int, ev.Validation]:
    return {e.step: e for e in events(run) if isinstance(e, ev.Validation)}


# ----------------------------------------------------------------------------------------------------- TensorBoard
@pytest.mark.system
def test_tensorboard_events_read_back_equal_the_metrics_and_a_resume_continues_the_folder(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    first = train(tmp_path, *sim_args(4), "--track", "tensorboard", "--out", str(run))
    assert first.returncode == 0, first.stderr[-3000:]
    forget_last_checkpoint(run)  # resume from step 2: steps 3 and 4 are trained (and logged) again, then 5, 6
    resumed = train(tmp_path, *sim_args(6), "--resume", "--out", str(run))  # --track not repeated: the run's own
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run / "wandb").exists()

    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per session, in the same folder
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    losses = step_losses(run)  # the metrics file; a resumed step's last report wins
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    tb = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    assert [s for s, _ in tb] == [1, 2, 3, 4, 5, 6]  # the repeated steps once: the first session's are purged
    for step, value in tb:
        assert value == pytest.approx(losses[step], rel=1e-6)  # float32 in the event file
    steps = {e.step: e for e in events(run) if isinstance(e, ev.Step)}
    for tag, field in (("train/lr", "lr"), ("train/grad_norm", "grad_norm"), ("train/samples_per_s", "samples_per_s")):
        got = {s.step: s.value for s in acc.Scalars(tag)}
        assert got == pytest.approx({k: getattr(v, field) for k, v in steps.items()}, rel=1e-6), tag
    vals = validations(run)
    assert sorted(vals) == [2, 4, 6]
    assert {s.step: s.value for s in acc.Scalars("val/loss")} == pytest.approx(
        {k: v.val_loss for k, v in vals.items()}, rel=1e-6)
    joint = vals[2].joint_names[0]
    assert {s.step: s.value for s in acc.Scalars(f"val/action_mae/{joint}")} == pytest.approx(
        {k: v.action_mae_per_joint[0] for k, v in vals.items()}, rel=1e-6)

    # the resumed session's file starts with TensorBoard's restart marker at the first repeated step
    # (SummaryWriter purge_step), which is what hides the first session's steps 3 and 4
    starts = [e.step for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")
              and e.session_log.status == e.session_log.START]
    assert starts == [3]

    # the configuration and the dataset fingerprint (the one the run recorded in data_state/) as hparams + text
    fingerprint = json.loads((run / "data_state" / "dataset.json").read_text())["fingerprint"]
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["dataset_fingerprint"].string_value == fingerprint
    assert info.hparams["model"].string_value == "pi0_tiny"
    assert info.hparams["optim.peak_lr"].number_value == pytest.approx(
        json.loads((run / "train_config.json").read_text())["optim"]["peak_lr"])
    assert "config/text_summary" in acc.Tags()["tensors"]


# ----------------------------------------------------------------------------------------------------- W&B offline
def wandb_records(path: Path):
    """The records of a .wandb file, parsed with W&B's own protobuf schema (wandb.proto.wandb_internal_pb2).
    wandb 0.31 ships no Python reader for the file (its Go core writes it), so the framing is read here: a 7-byte
    header (":W&B", magic, version), then LevelDB-log records in 32 KiB blocks (crc32, length, type; a record
    split over blocks as FIRST / MIDDLE / LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, head, pos, pending = 32768, 7, 7, b""
    while pos + head <= len(data):
        left = block - pos % block
        if left < head:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + head])
        chunk = data[pos + head:pos + head + length]
        pos += head + length
        if kind == 0:  # zero padding up to the block's end
            pos += block - pos % block if pos % block else 0
            continue
        if kind in (1, 4):  # FULL, LAST
            rec = pb.Record()
            rec.ParseFromString(pending + chunk if kind == 4 else chunk)
            pending = b""
            yield rec
        else:  # FIRST, MIDDLE
            pending = (pending if kind == 3 else b"") + chunk


def wandb_run(folder: Path) -> dict:
    """One offline run folder -> its run id, project, config and history rows."""
    (file,) = folder.glob("run-*.wandb")
    out: dict = {"id": None, "project": None, "config": {}, "history": []}
    for rec in wandb_records(file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["project"] = rec.run.run_id, rec.run.project
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    out["config"] = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in out["config"].items()}
    return out


@pytest.mark.system
def test_wandb_offline_run_has_the_metrics_and_a_resume_keeps_the_run_id(tmp_path):
    run = tmp_path / "run"
    first = train(tmp_path, *sim_args(4), "--track", "wandb", "--wandb-mode", "offline", "--wandb-project", "cube",
                  "--json", "--out", str(run))
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((run / "tracking.json").read_text())
    run_id = state["wandb_id"]
    said = [e.text for e in map(ev.parse, first.stdout.splitlines()) if isinstance(e, ev.Status)]
    assert any(f"wandb sync --id {run_id}" in t for t in said)  # how to upload it later
    assert all(line.startswith("{") for line in first.stdout.splitlines() if line.strip())  # stdout: events only
    forget_last_checkpoint(run)
    resumed = train(tmp_path, *sim_args(5), "--resume", "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run / "tensorboard").exists()
    assert not any(Path(tmp_path / "wandb_dir").iterdir())  # all of it under the run folder

    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    runs = [wandb_run(f) for f in folders]
    assert [r["id"] for r in runs] == [run_id, run_id] and {r["project"] for r in runs} == {"cube"}

    logged: dict[tuple[int, str], float] = {}
    for r in runs:  # in session order: a repeated step's later value wins, as in the metrics file
        for row in r["history"]:
            for k, v in row.items():
                if not k.startswith("_") and k != "train/step":
                    logged[(row["train/step"], k)] = v
    losses = step_losses(run)
    assert sorted(losses) == [1, 2, 3, 4, 5]
    assert {s: logged[(s, "train/loss")] for s in losses} == losses  # JSON doubles: exact
    steps = [e for e in events(run) if isinstance(e, ev.Step)]
    assert {(e.step, "train/lr"): e.lr for e in steps} == {k: v for k, v in logged.items() if k[1] == "train/lr"}
    vals = validations(run)
    assert {s: logged[(s, "val/loss")] for s in vals} == {s: v.val_loss for s, v in vals.items()}
    assert {s: logged[(s, "val/action_mae")] for s in vals} == {s: v.action_mae for s, v in vals.items()}
    assert {k[1] for k in logged} >= {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s",
                                      "val/loss", "val/action_mae", f"val/action_mae/{vals[2].joint_names[0]}"}

    fingerprint = json.loads((run / "data_state" / "dataset.json").read_text())["fingerprint"]
    config = runs[-1]["config"]
    assert config["dataset_fingerprint"] == fingerprint
    assert config["model"] == "pi0_tiny" and config["steps"] == 5 and config["resumed"] is True
    assert config["tracking"]["wandb_project"] == "cube"
    assert runs[0]["config"]["steps"] == 4 and runs[0]["config"]["resumed"] is False


# ----------------------------------------------------------------------------------------------------- off, errors
PROBE = """
import json, sys
from workbench.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "loaded": sorted(m for m in sys.modules
                                             if m.split(".")[0] in ("tensorboard", "wandb", "tensorboardX")
                                             or m.startswith("torch.utils.tensorboard"))}))
"""


def test_off_by_default_writes_nothing_and_imports_neither_library(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", PROBE, "train", *TINY_ARGS, "--dataset", "synthetic", "--steps", "2",
                        "--out", str(run)], env=tracking_env(tmp_path), cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    probe = json.loads(r.stdout.strip().splitlines()[-1])
    assert probe == {"rc": 0, "loaded": []}
    assert (run / "policy").is_dir()
    for name in ("tensorboard", "wandb", "tracking.json"):
        assert not (run / name).exists(), name
    assert json.loads((run / "train_config.json").read_text())["tracking"]["backends"] == []
    assert not any(any((tmp_path / d).iterdir()) for d in ("wandb_dir", "wandb_config", "cache", "data"))


BLOCKED = """
import sys
sys.modules[sys.argv[1]] = None  # as if not installed: importing it raises ImportError
from workbench.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_a_missing_package_is_a_clear_error_before_the_model_is_built(tmp_path, backend):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", BLOCKED, backend, "train", *TINY_ARGS, "--dataset", "synthetic",
                        "--steps", "2", "--track", backend, "--out", str(run)], env=tracking_env(tmp_path), cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"pip install {backend}" in r.stderr and f"--track {backend}" in r.stderr
    failed = [e for e in events(run) if isinstance(e, ev.Failed)]
    assert [f.error for f in failed] == ["tracking_unavailable"]
    assert "building the model" not in r.stdout and not (run / "checkpoints").exists()


def test_wandb_online_without_a_login_says_how_to_log_in(tmp_path):
    run = tmp_path / "run"
    e = tracking_env(tmp_path)
    e.pop("WANDB_MODE")
    e["HOME"] = str(tmp_path)  # no ~/.netrc, no ~/.config/wandb of this machine's user
    r = subprocess.run(train_cmd(*TINY_ARGS, "--dataset", "synthetic", "--steps", "2", "--track", "wandb",
                                 "--wandb-mode", "online", "--out", str(run)),
                       env=e, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "wandb login" in r.stderr and "--wandb-mode offline" in r.stderr
    assert not (run / "checkpoints").exists()


@pytest.mark.system
def test_only_rank_0_logs_under_torchrun(tmp_path):
    run = tmp_path / "run"
    r = train(tmp_path, *TINY_ARGS[:-2], "--val-every", "0", "--dataset", "synthetic", "--steps", "2", "--batch",
              "4", "--device", "cpu", "--gpus", "2", "--track", "tensorboard", "--track", "wandb", "--out", str(run),
              timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == [1, 2]


# ----------------------------------------------------------------------------------------------------- options
def parse(tmp_path: Path, *argv: str):
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    return config_from_args(build_parser().parse_args(["train", "--dataset", "synthetic", "--out",
                                                       str(tmp_path / "run"), *argv]))


def test_options_and_the_train_config_round_trip(tmp_path):
    from finetune.train import TrainConfig

    assert parse(tmp_path).tracking == TrackingConfig()  # off by default
    cfg = parse(tmp_path, "--track", "wandb", "--track", "tensorboard", "--wandb-project", "towels",
                "--wandb-mode", "online")
    assert cfg.tracking == TrackingConfig(("wandb", "tensorboard"), "towels", "online")
    back = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg and back.tracking.backends == ("wandb", "tensorboard")
    assert "tracking" not in cfg.resume_key()  # turning tracking on or off does not block a resume
    old = cfg.to_json()
    old.pop("tracking")  # a run from before tracking
    assert TrainConfig.from_json(old).tracking == TrackingConfig()

    for bad, why in ((["--wandb-mode", "online"], "goes with --track wandb"),
                     (["--track", "tensorboard", "--wandb-project", "x"], "goes with --track wandb"),
                     (["--track", "none", "--track", "wandb"], "does not combine"),
                     (["--track", "wandb", "--wandb-project", "me/x"], "plain name")):
        with pytest.raises(SystemExit, match=why):
            parse(tmp_path, *bad)


@pytest.mark.system
def test_a_resume_keeps_the_runs_tracking_unless_told(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stored = parse(tmp_path, "--track", "wandb", "--wandb-project", "cube")
    (run / "train_config.json").write_text(json.dumps(stored.to_json()))
    assert parse(tmp_path, "--resume").tracking == stored.tracking  # full options, no --track: the run's
    assert parse(tmp_path, "--resume", "--wandb-mode", "online").tracking == TrackingConfig(("wandb",), "cube",
                                                                                           "online")
    assert parse(tmp_path, "--resume", "--track", "none").tracking == TrackingConfig()
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    alone = config_from_args(build_parser().parse_args(["train", "--out", str(run), "--resume"]))
    assert alone.tracking == stored.tracking
