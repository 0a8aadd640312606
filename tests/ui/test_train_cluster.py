"""Train tab, "Run on" (issue 24): the cluster profile form (labels and help from the profile's fields, a bad value
refused naming its field, saved and read back as `workbench train --slurm NAME` reads it), the command line the tab
runs for an SSH host and a SLURM profile (the CLI's own parse of it), nothing cut at 1280x800, and real SLURM jobs
(a single-node slurmctld/slurmd/munge reached through sshd on loopback, tests/finetune/slurm_helpers.py) submitted,
followed, cancelled and fetched from the tab."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QDialogButtonBox

from finetune import events as ev
from finetune.run_status import run_status
from finetune.cluster import PROFILE_FIELDS, ClusterProfile, JobState, JobStatus, list_profiles, load_profile, \
    save_profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, TrainPanel  # noqa: E402
from ui.train_where import SLURM, SSH  # noqa: E402

TINY = next(i for i, p in enumerate(PRESETS) if p.name == "tiny")
FAST = ("--workers", "0", "--log-every", "1", "--val-every", "0", "--device", "cpu")


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    """The profiles folder (XDG_CONFIG_HOME/aloha-workbench/clusters) under tmp, for the tab and its processes."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "aloha-workbench" / "clusters"


def make_panel(qtbot, tmp_path, settings: QSettings | None = None, **kw) -> TrainPanel:
    settings = settings or QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    p = TrainPanel(settings, runs_root=tmp_path / "home" / "runs", has_gpu=False, **kw)
    qtbot.addWidget(p)
    return p


def save_button(dlg):
    return dlg.buttons.button(QDialogButtonBox.StandardButton.Save)


# ------------------------------------------------------------------------------------------------ profile form
def test_the_profile_form_refuses_a_bad_value_naming_the_field_and_round_trips(qtbot, tmp_path, config_home):
    panel = make_panel(qtbot, tmp_path)
    panel.where.set_kind(SLURM)
    assert panel.where.choice().problem() == "Choose a cluster profile (New… makes one)."
    dlg = panel.where.edit_profile(new=True)
    qtbot.waitExposed(dlg)
    form = dlg.form
    assert set(form.inputs) == set(PROFILE_FIELDS)  # every field, with its label and help
    shown = {lab.text() for lab in form.findChildren(type(form.error))}
    for name, f in PROFILE_FIELDS.items():
        assert f"{f.metadata['help']} · {f.metadata['option']}" in shown, name
        assert f.metadata["help"] in form.inputs[name].toolTip()
    lines = {"extra_sbatch": "--exclusive\n#SBATCH --reservation=lab", "setup": "module load cuda/12.4\nsource ~/venv"}
    for name, text in {"name": "lab", "login": "me@login.lab.edu", "remote_dir": "/scratch/me/wb",
                       "partition": "gpu", "account": "my-lab", "mem": "200G", "time_limit": "tomorrow",
                       "container": "/scratch/me/wb.sif", **lines}.items():
        form.inputs[name].setPlainText(text) if name in lines else form.inputs[name].setText(text)
    form.inputs["nodes"].setValue(2)
    form.inputs["gpus_per_node"].setValue(4)
    form.inputs["offline_nodes"].setChecked(False)
    save_button(dlg).click()
    assert dlg.isVisible() and not list_profiles()  # refused: nothing saved, the dialog stays
    said = form.error.text()
    assert form.error.isVisibleTo(dlg) and said.startswith("Time limit (--time): --time 'tomorrow'"), said
    assert form.inputs["time_limit"].property("invalid") and dlg.focusWidget() is form.inputs["time_limit"]
    assert not form.inputs["mem"].property("invalid")
    form.inputs["time_limit"].setText("12:00:00")
    form.inputs["signal_lead_s"].setValue(50_000)  # longer than the time limit: signalled as it starts
    save_button(dlg).click()
    assert dlg.isVisible() and form.error.text().startswith("Signal lead (s) (--signal-lead):")
    assert form.inputs["signal_lead_s"].property("invalid") and not form.inputs["time_limit"].property("invalid")
    form.inputs["signal_lead_s"].setValue(600)
    save_button(dlg).click()
    assert not dlg.isVisible() and list_profiles() == ["lab"]
    want = ClusterProfile(name="lab", login="me@login.lab.edu", remote_dir="/scratch/me/wb", partition="gpu",
                          account="my-lab", nodes=2, gpus_per_node=4, mem="200G", time_limit="12:00:00",
                          extra_sbatch=("--exclusive", "#SBATCH --reservation=lab"),
                          setup=("module load cuda/12.4", "source ~/venv"), container="/scratch/me/wb.sif",
                          offline_nodes=False, signal_lead_s=600)
    assert load_profile("lab") == want  # the file `workbench train --slurm lab` reads
    assert panel.where.profile.currentText() == "lab" and panel.where.choice().problem() is None
    assert "me@login.lab.edu · partition gpu · account my-lab · 2 nodes × 4 GPUs" in panel.where.summary.text()
    again = panel.where.edit_profile()  # Edit…: the saved values, unchanged by a round trip through the form
    assert again.form.profile() == want
    again.reject()

    (config_home / "broken.toml").write_text('partiton = "gpu"\n')  # a typo in a hand-edited file: named
    panel.where.refresh_profiles("broken")
    assert panel.where.summary.text().startswith("key 'partiton': ") and "unknown key 'partiton'" in \
        panel.where.summary.text()
    problem = panel.where.choice().problem()
    assert problem is not None and "unknown key 'partiton'" in problem
    panel.dataset.setText(str(tmp_path / "ds"))
    panel.train_btn.click()
    assert not panel.is_running() and "partiton" in panel.error_l.text()


# ------------------------------------------------------------------------------------------------ command lines
def _parse(argv: list[str]):
    from workbench.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def test_the_command_line_for_an_ssh_host_and_a_slurm_profile_is_the_clis(qtbot, tmp_path, config_home):
    """What the Train button runs is what a CLI user types: the same options parsed the same way, the same command
    on the SSH host, the same profile and trainer arguments for the cluster, the same tracking."""
    from finetune.launch import RemoteTarget, drop_options, plan_remote
    from finetune.tracking import TrackingConfig
    from workbench.cli_train import SLURM_FLAGS, SLURM_VALUE_OPTIONS, slurm_profile_from_args, tracking_from_args

    ds = tmp_path / "cube"
    ds.mkdir()
    out = tmp_path / "home" / "runs" / "cube"
    panel = make_panel(qtbot, tmp_path)
    panel.dataset.setText(str(ds))
    panel.preset.setCurrentIndex(TINY)
    panel.steps.setValue(40)
    panel.name.setText("cube")
    panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))

    def same(typed: str) -> list[str]:
        argv = panel.command_line()
        want = shlex.split(typed)
        assert vars(_parse(argv)) == vars(_parse(want)), (argv, want)
        return argv

    panel.where.set_kind(SSH)
    panel.where.host.setText("me@gpu-box")
    panel.where.remote_dir.setText("/scratch/me")
    panel.track.tensorboard.setChecked(True)
    panel.track.wandb.setChecked(True)
    panel.track.mode.setCurrentText("online")
    panel.track.project.setText("cube-lab")
    argv = same(f"--dataset {ds} --out {out} --config tiny --steps 40 --outcome all --json --track tensorboard "
                "--track wandb --wandb-mode online --wandb-project cube-lab --host me@gpu-box --remote-dir /scratch/me")
    args = _parse(argv)
    assert (args.host, args.remote_dir) == ("me@gpu-box", "/scratch/me")
    target = RemoteTarget.make("me@gpu-box", "/scratch/me")
    assert plan_remote(argv, target).args == ["train", "--dataset", "/scratch/me/datasets/cube", "--out",
                                              "/scratch/me/runs/cube", "--config", "tiny", "--json", "--steps",
                                              "40", "--outcome", "all", "--track", "tensorboard", "--track",
                                              "wandb", "--wandb-mode", "online", "--wandb-project", "cube-lab"]
    assert tracking_from_args(args, TrackingConfig()) == TrackingConfig(("tensorboard", "wandb"), "cube-lab", "online")
    panel.where.remote_dir.setText("~/workbench-runs")  # the default is not repeated
    assert "--remote-dir" not in panel.command_line()

    save_profile(ClusterProfile(name="lab", login="me@login", partition="gpu", gpus_per_node=4, time_limit="2:00:00"))
    panel.where.refresh_profiles("lab")
    panel.where.set_kind(SLURM)
    panel.track.wandb.setChecked(False)
    argv = same(f"--dataset {ds} --out {out} --config tiny --steps 40 --outcome all --json --track tensorboard "
                "--slurm lab --poll-s 5")
    assert slurm_profile_from_args(_parse(argv)) == load_profile("lab")
    on_cluster = [a for a in drop_options(argv, SLURM_VALUE_OPTIONS) if a not in SLURM_FLAGS]
    assert on_cluster == ["--dataset", str(ds), "--out", str(out), "--config", "tiny", "--json", "--steps", "40",
                          "--outcome", "all", "--track", "tensorboard"]
    panel.where.set_kind("local")
    assert "--slurm" not in panel.command_line() and "--host" not in panel.command_line()
    panel.track.wandb.setChecked(True)
    panel.track.project.setText("lab/cube")  # finetune.tracking's own check, before anything starts
    panel.start()
    assert not panel.is_running() and "W&B project name 'lab/cube'" in panel.error_l.text()


def test_run_on_and_tracking_rows_fit_at_the_default_window_size(qtbot, window, config_home):
    """At 1280x800 the Train tab with the SSH rows, then the cluster rows and W&B's, cuts no text."""
    from tests.ui.layout_checks import window_cuts

    save_profile(ClusterProfile(name="lab-cluster", login="someone@login.cluster.example.edu", partition="gpu-long",
                                account="robot-learning", nodes=2, gpus_per_node=8, time_limit="2-00:00:00"))
    panel = window.train_panel
    window.show_tab(panel)
    panel.where.refresh_profiles("lab-cluster")
    for kind in (SSH, SLURM):
        panel.where.set_kind(kind)
        panel.track.wandb.setChecked(kind == SLURM)
        panel.track.tensorboard.setChecked(True)
        qtbot.wait(100)
        assert not window_cuts(window), (kind, window_cuts(window))
        page = window._pages[panel]
        assert panel.width() <= page.viewport().width(), (kind, panel.width(), page.viewport().width())
    panel.queue_l.show()  # the progress box of a SLURM run: its queue line, log tail and tracking command
    panel._on_event(JobStatus(12, JobState.PENDING, "PENDING", reason="Priority"))
    panel.log_view.show()
    panel._show_command(panel.wandb_cmd, "wandb sync --id abc123 /home/someone/workbench-runs/cube/wandb/"
                        "offline-run-20250101_000000-abc123")
    qtbot.wait(100)
    assert not window_cuts(window), window_cuts(window)
    assert panel.queue_l.text() == "job 12 pending (Priority)"


# ------------------------------------------------------------------------------------------------ real SLURM
# slurm and login: tests/conftest.py (one SLURM for the whole session)


@pytest.fixture
def cluster_profiles(login, tmp_path, config_home, monkeypatch) -> dict[str, ClusterProfile]:
    """Two saved profiles of the loopback cluster: "loop", and "held", whose jobs wait (sbatch --hold) until
    released: pending with SLURM's reason, for as long as the test wants."""
    from slurm_helpers import PARTITION
    from ssh_helpers import LOGIN

    monkeypatch.setenv("WORKBENCH_SSH", login.ssh)
    loop = ClusterProfile(name="loop", login=LOGIN, remote_dir=str(tmp_path / "cluster"), partition=PARTITION,
                          gpus_per_node=0, cpus_per_task=1, python=sys.executable, signal_lead_s=60,
                          setup=(f"export PYTHONPATH={ROOT}",))
    held = ClusterProfile(**{**vars(loop), "name": "held", "extra_sbatch": ("--hold",)})
    for p in (loop, held):
        save_profile(p)
    return {"loop": loop, "held": held}


def _cluster_form(panel: TrainPanel, profile: str, steps: int, name: str) -> None:
    panel.where.poll_s = 0.5
    panel.dataset.setText(str(sim_dataset()))
    panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))  # the sim episodes are failures
    panel.preset.setCurrentIndex(TINY)
    panel.steps.setValue(steps)
    panel.batch.setValue(2)
    panel.name.setText(name)
    panel.where.set_kind(SLURM)
    panel.where.refresh_profiles(profile)


def _label(panel: TrainPanel, run: str) -> str:
    return next(panel.runs.topLevelItem(i).text(2) for i in range(panel.runs.topLevelItemCount())
                if panel.runs.topLevelItem(i).text(0) == run)


@pytest.mark.system
def test_a_slurm_run_from_the_tab_queues_runs_finishes_and_comes_home(qtbot, tmp_path, slurm, cluster_profiles):
    """Train on "SLURM cluster" with a saved profile: the job shows pending with SLURM's reason (held), running with
    its step, then finished; the loss is plotted from the job log's events; the run is listed from the submission
    with its job's state; the run folder comes home and "Use in trials" hands its policy on."""
    panel = make_panel(qtbot, tmp_path, extra_args=FAST)
    _cluster_form(panel, "held", steps=6, name="cube")
    seen: list = []
    panel.event_received.connect(seen.append)
    panel.train_btn.click()
    assert panel.is_running() and panel.queue_l.isVisibleTo(panel) and panel.log_view.isVisibleTo(panel)
    qtbot.waitUntil(lambda: panel.job_status is not None, timeout=120_000)
    job = panel.job_status
    assert job.state == JobState.PENDING and job.reason == "JobHeldUser", job
    assert panel.queue_l.text() == f"job {job.job_id} pending (JobHeldUser)"
    assert _label(panel, "cube") == "SLURM pending (JobHeldUser)"  # listed from the submission on
    assert not panel.use_btn.isEnabled() and panel.cancel_btn.isEnabled()
    slurm.run("scontrol", "release", str(job.job_id), check=True)
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=180_000)
    states = [e.state for e in seen if isinstance(e, JobStatus)]
    assert states[0] == JobState.PENDING and JobState.RUNNING in states and states[-1] == JobState.FINISHED, states
    running = next(e for e in seen if isinstance(e, JobStatus) and e.state == JobState.RUNNING)
    assert running.nodes == slurm.node
    steps = [e.step for e in seen if isinstance(e, ev.Step)]
    assert steps == list(range(1, 7))
    xs, ys = panel.loss_curve.getData()
    assert list(xs) == steps and all(y > 0 for y in ys)
    assert panel.queue_l.text().startswith(f"job {job.job_id} finished: step 6/6"), panel.queue_l.text()
    assert not panel.error_l.isVisible(), panel.error_l.text()
    run = panel.runs_root / "cube"
    assert (run / "policy" / "policy.json").is_file() and (run / "slurm_job.sh").is_file()
    assert not (run / "checkpoints").exists()  # they stay on the cluster
    assert _label(panel, "cube") == "SLURM finished, policy ready"
    assert panel.selected_run() == run and panel.use_btn.isEnabled() and not panel.follow_btn.isEnabled()
    assert "the run folder is home: its policy is ready for trials" in panel.status.text(), panel.status.text()
    assert panel.use_in_trials() == str(run / "policy")


@pytest.mark.system
def test_a_job_followed_again_after_a_restart_is_cancelled_from_the_tab(qtbot, tmp_path, slurm, cluster_profiles):
    """The app closes while its job runs (the job goes on); a new Train tab lists the run with its job's state,
    Follow picks it up again (the loss plot from the log's start), Cancel (`workbench cluster cancel`) makes it
    checkpoint and end cancelled: listed as such, its policy home, resumable on the cluster."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    first = make_panel(qtbot, tmp_path, settings, extra_args=FAST)
    _cluster_form(first, "loop", steps=5000, name="long")
    first.train_btn.click()
    qtbot.waitUntil(lambda: first.progress.value() >= 2, timeout=120_000)
    first.shutdown()  # stops following, not the job
    assert slurm.job(first.job_status.job_id).get("JobState") == "RUNNING"

    panel = make_panel(qtbot, tmp_path, settings)  # the app started again
    panel.where.poll_s = 0.5
    assert _label(panel, "long") == "SLURM running"
    before = run_status(panel.runs_root / "long").step
    panel.refresh_btn.click()  # asks the cluster (`workbench cluster status RUN --json`): a later step
    assert panel.aux_busy()
    qtbot.waitUntil(lambda: not panel.aux_busy(), timeout=60_000)
    assert run_status(panel.runs_root / "long").step > before and _label(panel, "long") == "SLURM running"
    panel.select_run(panel.runs_root / "long")
    assert panel.follow_btn.isEnabled() and panel.cancel_btn.isEnabled() and not panel.resume_btn.isEnabled()
    assert panel.queue_l.text().startswith(f"job {first.job_status.job_id} running")
    panel.follow_btn.click()
    assert panel.is_running() and not panel.follow_btn.isEnabled()
    qtbot.waitUntil(lambda: len(panel.steps_x) >= 3, timeout=60_000)
    assert panel.steps_x[:3] == [1, 2, 3]  # read again from the log's start
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=120_000)
    assert panel.job_status is not None and panel.job_status.state == JobState.CANCELLED, panel.queue_l.text()
    stopped = panel.job_status.step
    assert stopped is not None and 3 <= stopped < 5000
    assert _label(panel, "long") == "SLURM cancelled, policy ready"
    assert f"job {panel.job_status.job_id} cancelled" in panel.status.text()
    assert panel.resume_btn.isEnabled() and panel.use_btn.isEnabled() and not panel.follow_btn.isEnabled()
    assert not panel.error_l.isVisible(), panel.error_l.text()


@pytest.mark.system
def test_a_submission_slurm_refuses_shows_slurms_reason_and_the_option(qtbot, tmp_path, slurm, cluster_profiles):
    bad = ClusterProfile(**{**vars(cluster_profiles["loop"]), "name": "badpart", "partition": "nosuch"})
    save_profile(bad)
    panel = make_panel(qtbot, tmp_path, extra_args=FAST)
    _cluster_form(panel, "badpart", steps=6, name="refused")
    panel.train_btn.click()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=120_000)
    said = panel.error_l.text()
    assert panel.error_l.isVisibleTo(panel) and "SLURM refused the job" in said and "invalid partition" in said.lower()
    assert "Fix: change --partition" in said, said
    assert panel.runs.topLevelItemCount() == 0  # nothing was queued: no run to list
