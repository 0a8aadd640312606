"""Train tab: a real training process (QProcess running `workbench train`) on episodes recorded on the simulated
rig, its loss in the plot, cancel (checkpoint then stop), resume, and "Use in trials"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from finetune import events as ev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

from train_helpers import sim_dataset  # noqa: E402
from ui.train_panel import PRESETS, SETTINGS_POLICY, TrainPanel  # noqa: E402

TINY = next(i for i, p in enumerate(PRESETS) if p.name == "tiny")


@pytest.fixture
def panel(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    p = TrainPanel(settings, runs_root=tmp_path / "runs",
                   extra_args=("--workers", "0", "--log-every", "2", "--val-every", "10", "--save-every", "10",
                               "--val-fraction", "0.34"))
    qtbot.addWidget(p)
    yield p
    p.shutdown()


def test_the_tab_offers_every_preset_of_the_cli_and_selects_it_by_name(panel, tmp_path):
    from finetune import presets
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    assert [panel.preset.itemData(i) for i in range(panel.preset.count())] == list(presets.NAMES)
    assert "small" in presets.NAMES  # the model that learns on a CPU
    panel.dataset.setText(str(tmp_path / "cube"))
    for i, p in enumerate(presets.PRESETS):
        panel.preset.setCurrentIndex(i)
        assert (panel.steps.value(), panel.batch.value(), panel.preset_note.text()) == (p.steps, p.batch_size, p.note)
        assert panel.base.isEnabled() == (not p.random_init)
        panel.steps.setValue(p.steps + 1)
        argv = panel.request().argv()
        cfg = config_from_args(build_parser().parse_args(["train", *argv]))
        assert (cfg.model, cfg.base, cfg.lora, cfg.steps, cfg.batch_size) == (
            p.model, p.base, p.lora, p.steps + 1, p.batch_size), p.name
        assert argv[argv.index("--config") + 1] == p.name and "--batch" not in argv  # only what the form changed


def _finished(panel) -> bool:
    return not panel.is_running() and isinstance(panel.last_event, (ev.Finished, ev.Failed))


def all_labels(panel) -> None:
    """The recorded sim episodes are failures (nobody drives the arms); the tab trains on successes by default."""
    panel.outcome_f.setCurrentIndex(panel.outcome_f.findData("all"))


def test_train_end_to_end_shows_loss_and_hands_the_policy_to_trials(qtbot, panel):
    """A tiny run to its end: the loss plotted, the base it used named (random weights), the validation's action
    error with its units, and the finished run selected: "Use in trials" on, Resume off (nothing left), no ETA."""
    panel.dataset.setText(str(sim_dataset()))
    all_labels(panel)
    panel.preset.setCurrentIndex(TINY)
    assert (panel.steps.value(), panel.batch.value()) == (PRESETS[TINY].steps, PRESETS[TINY].batch_size)
    panel.steps.setValue(20)
    panel.name.setText("cube")
    seen: list[ev.Event] = []
    panel.event_received.connect(seen.append)
    panel.train_btn.click()
    assert panel.is_running() and not panel.train_btn.isEnabled() and panel.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: _finished(panel), timeout=180_000)
    assert isinstance(panel.last_event, ev.Finished) and panel.last_event.reason == "done", panel.status.text()
    steps = [e for e in seen if isinstance(e, ev.Step)]
    assert [s.step for s in steps][-1] == 20
    xs, ys = panel.loss_curve.getData()
    assert list(xs) == [s.step for s in steps] and list(ys) == [s.loss for s in steps]
    assert panel.loss_l.text() == f"{steps[-1].loss:.4f}" and panel.progress.value() == 20
    assert panel.val_curve.getData()[0] is not None
    assert panel.val_l.text().startswith("loss ") and " rad (arm joints), gripper " in panel.val_l.text()
    assert panel.base_l.text() == "random weights (pi0_tiny)"
    assert panel.runs.topLevelItemCount() == 1 and panel.runs.topLevelItem(0).text(2) == "policy ready"
    assert panel.selected_run() == panel.runs_root / "cube"  # selected without looking for it
    assert panel.use_btn.isEnabled() and not panel.resume_btn.isEnabled() and panel.eta_l.text() == "–"
    assert not panel.error_l.isVisibleTo(panel)

    chosen: list[str] = []
    panel.policy_chosen.connect(chosen.append)
    panel.use_btn.click()
    assert chosen == [str(panel.runs_root / "cube" / "policy")]
    assert panel.settings.value(SETTINGS_POLICY) == chosen[0]


@pytest.mark.system  # end to end through a child process: CI's system step (README)
def test_cancel_checkpoints_then_resume_continues(qtbot, panel):
    """Cancel: a checkpoint, the run listed "stopped" and selected, Resume and "Use in trials" on at once, the ETA
    cleared; Resume continues from the checkpoint."""
    panel.dataset.setText(str(sim_dataset()))
    all_labels(panel)
    panel.preset.setCurrentIndex(TINY)
    panel.steps.setValue(100_000)
    panel.name.setText("long")
    panel.train_btn.click()
    qtbot.waitUntil(lambda: isinstance(panel.last_event, ev.Step) and panel.last_event.step >= 4, timeout=120_000)
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: _finished(panel), timeout=60_000)
    assert panel.last_event.reason == "cancelled"
    stopped_at = panel.last_event.step
    run = panel.runs_root / "long"
    assert (run / "checkpoints" / f"step_{stopped_at:08d}" / "state.json").is_file()
    assert panel.selected_run() == run and panel.runs.topLevelItem(0).text(2) == "stopped, policy ready"
    assert panel.resume_btn.isEnabled() and panel.use_btn.isEnabled() and panel.eta_l.text() == "–"
    panel.resume_btn.click()
    qtbot.waitUntil(lambda: isinstance(panel.last_event, ev.Step) and panel.last_event.step >= stopped_at + 2,
                    timeout=120_000)
    started = [e for e in __import__("train_helpers").events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed and started[-1].start_step == stopped_at
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: _finished(panel), timeout=60_000)


def test_download_base_runs_the_download_as_a_child_process_with_progress(qtbot, panel, tmp_path, monkeypatch):
    """"Download base" runs `workbench base download REPO --json` against the fake hub (a real HTTP server): the
    download bar follows its byte progress, the status line shows where the base is; a failure shows its fix."""
    import json

    from hub_helpers import FakeHub, full_size_config, host_tokenizer_sources

    hub = FakeHub()
    try:
        weights = bytes(range(256)) * 40_000  # ~10 MB
        hub.add_model("lab/pi0-base", {"config.json": full_size_config(), "model.safetensors": weights,
                                       "model.safetensors.index.json": json.dumps({"weight_map": {"a": "s1"}}).encode(),
                                       "s1": b"shard: not fetched"})
        host_tokenizer_sources(hub)
        for k, v in {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
                     "PYTHONPATH": str(ROOT)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        panel.preset.setCurrentIndex(next(i for i, p in enumerate(PRESETS) if p.name == "pi0-lora"))
        panel.base.setCurrentText("lab/pi0-base")
        seen: list[ev.Event] = []
        panel.download_event.connect(seen.append)
        assert panel.download_base_btn.isEnabled()
        panel.download_base_btn.click()
        assert panel.is_downloading() and not panel.download_base_btn.isEnabled() and not panel.train_btn.isEnabled()
        assert panel.download.isVisibleTo(panel)
        qtbot.waitUntil(lambda: not panel.is_downloading(), timeout=120_000)
        assert panel.base_ready is not None, panel.status.text()
        checkpoint = [e for e in seen if isinstance(e, ev.Download) and e.what != "tokenizer.model"]
        assert checkpoint and checkpoint[-1].done == checkpoint[-1].total > len(weights)  # bytes over all its files
        assert any(isinstance(e, ev.Download) and e.what == "tokenizer.model" for e in seen)
        assert panel.download.value() == 1000 and "ready" in panel.status.text()
        assert panel.base_ready.checkpoint in panel.status.text() and "HF_HUB_OFFLINE=1" in panel.status.text()
        assert panel.base_ready.tokenizer and panel.base_ready.tokenizer.endswith("tokenizer.model")
        assert sorted(hub.downloaded("lab/pi0-base")) == ["config.json", "model.safetensors"]
        assert panel.download_base_btn.isEnabled() and panel.train_btn.isEnabled()

        panel.download_base("lab/missing")  # the failure's message, with what to do, in the status line
        qtbot.waitUntil(lambda: not panel.is_downloading(), timeout=60_000)
        assert panel.base_ready is None and panel.status.text().startswith("download failed: lab/missing not found")
        assert not panel.download.isVisibleTo(panel)
    finally:
        hub.close()


def test_the_memory_line_follows_preset_lora_batch_precision_and_device(panel, tmp_path):
    """'needs ~X GB on <device> (has Y GB)' from finetune.memory_model, in warning colour when it will not fit;
    the form's LoRA / precision / device reach the command line."""
    from finetune import memory_model
    from finetune.model_config import Pi0Config
    from ui import theme
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    lora = next(i for i, p in enumerate(PRESETS) if p.name == "pi0-lora")
    panel.preset.setCurrentIndex(lora)
    panel.device.setCurrentText("cpu")
    panel.batch.setValue(4096)
    text = panel.memory.text()
    est = memory_model.estimate(Pi0Config.variant("pi0"), lora=True, precision="auto", batch=4096, grad_ckpt=True,
                                device_kind="cpu")
    assert text.startswith(f"needs ~{est.total / 2 ** 30:.1f} GB on cpu (has "), text
    assert panel.memory.property("fits") is False and theme.WARN in panel.memory.styleSheet()
    assert "will not fit" in text

    panel.preset.setCurrentIndex(TINY)  # the tiny model at its batch: fits any machine
    panel.device.setCurrentText("cpu")
    assert panel.memory.property("fits") is True and theme.WARN not in panel.memory.styleSheet()

    def needs() -> float:  # the estimate's figure (the available RAM beside it moves with the machine)
        return float(panel.memory.text().split("~", 1)[1].split(" GB", 1)[0])

    panel.preset.setCurrentIndex(lora)
    panel.device.setCurrentText("cpu")
    at_32 = needs()
    panel.batch.setValue(8)
    at_8 = needs()
    assert at_8 < at_32
    panel.lora.setChecked(False)
    full = needs()
    assert full > at_8
    panel.precision.setCurrentText("bf16-sr")
    assert needs() < full
    panel.dataset.setText(str(tmp_path / "cube"))
    argv = panel.request().argv()
    assert ["--no-lora", "--precision", "bf16-sr", "--device", "cpu"] == argv[-5:], argv
    cfg = config_from_args(build_parser().parse_args(["train", *argv]))
    assert (cfg.lora, cfg.precision, cfg.device) == (False, "bf16-sr", "cpu")


@pytest.mark.system  # end to end through a child process: CI's system step (README)
def test_export_policy_rebuilds_a_missing_policy_in_a_child_process(qtbot, panel):
    """A tiny run whose policy folder is gone (an export that failed): "Export policy" runs `workbench policy
    export RUN --json` as a child process, shows its progress and outcome, and refreshes the run list."""
    import json
    import shutil

    from finetune.policy_folder import load_policy
    from train_helpers import run_cli

    run = panel.runs_root / "lost"
    res = run_cli("--config", "tiny", "--dataset", "synthetic", "--steps", "2", "--batch", "2", "--workers", "0",
                  "--val-every", "0", "--out", str(run))
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((run / "policy" / "policy.json").read_text())
    (run / "policy" / "policy.json").write_text(json.dumps({**manifest, "step": 1}))  # older than step_2
    panel.refresh_runs()
    panel.select_run(run)
    assert panel.runs.topLevelItem(0).text(2) == "policy older than its last checkpoint"
    assert panel.export_btn.isEnabled()
    shutil.rmtree(run / "policy")
    panel.refresh_runs()
    assert panel.runs.topLevelItem(0).text(2) == "policy missing"
    assert panel.export_btn.isEnabled() and not panel.use_btn.isEnabled()

    seen: list[ev.Event] = []
    texts: list[str] = []
    panel.event_received.connect(seen.append)
    panel.event_received.connect(lambda e: texts.append(panel.status.text()))
    panel.export_btn.click()
    assert panel.is_running() and not panel.export_btn.isEnabled() and not panel.train_btn.isEnabled()
    qtbot.waitUntil(lambda: _finished(panel), timeout=120_000)
    assert isinstance(panel.last_event, ev.Finished) and panel.last_event.reason == "done", panel.status.text()
    assert any(t.startswith("exporting the policy folder: ") and "%" in t for t in texts)  # progress shown
    assert [e.step for e in seen if isinstance(e, ev.PolicySaved)] == [2]
    assert panel.status.text().startswith("finished (done) at step 2")
    item = panel.runs.topLevelItem(0)
    assert (item.text(1), item.text(2)) == ("2", "policy ready")
    assert load_policy(run / "policy").manifest["step"] == 2
    assert not panel.export_btn.isEnabled() and panel.use_btn.isEnabled()
