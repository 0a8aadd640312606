"""HG-DAgger data selection: which steps of trial episodes (policy rollouts) become training samples under
DataConfig.trials = exclude / corrections / all, on real episode files (2 demonstrations + trials with correction
segments), the `--trials` flag, and the Train tab's "Trial episodes" combo."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QSettings

from finetune.model_config import Pi0Config
from finetune.data import DataConfig, build_training_data
from finetune.episode_set import EpisodeDataError
from recorder.quality import QualityThresholds
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from tests.finetune.data_helpers import tiny_tokenizer
from tests.recorder.helpers import CAMS, tick
from tests.workbench.test_trial_stats import record_trial

MODEL = Pi0Config.variant("pi0_tiny")  # action horizon 50
DEMO_STEPS, TRIAL_STEPS = 30, 80
CORRECTIONS = {"episode_2": [(10, 25)], "episode_3": [(5, 12), (40, 70)]}  # [start, end) per trial


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """episode_0, 1: demonstrations; 2, 3: trials with correction segments; 4: a trial nobody corrected."""
    store = DatasetStore(tmp_path_factory.mktemp("hg") / "ds")
    for _ in range(2):
        w = store.new_episode(CAMS, task="transfer the cube", control_hz=50,
                              thresholds=QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0))
        for i in range(DEMO_STEPS):
            w.append(tick(i))
        w.set_outcome("success")
        w.stop()
    record_trial(store, "failure", steps=TRIAL_STEPS, corrections=CORRECTIONS["episode_2"], tts=None)
    record_trial(store, "success", steps=TRIAL_STEPS, corrections=CORRECTIONS["episode_3"],
                 prompt="pick up the cube")
    record_trial(store, "success", steps=TRIAL_STEPS)
    return store.root


def build(ds, tok, **cfg):
    return build_training_data(DataConfig(str(ds), val_fraction=0.0, **cfg), MODEL, tok, batch_size=2,
                               num_workers=0, seed=0)


def samples(data) -> dict[str, list[tuple[int, int]]]:
    """Episode id -> [(step, end of its action targets)] of the training samples."""
    d = data.train_loader.loader.dataset
    out: dict[str, list[tuple[int, int]]] = {}
    ends = d.end_of if d.end_of is not None else [d.episodes[e].length for e in d.ep_of]
    for e, t, end in zip(d.ep_of, d.t_of, ends):
        out.setdefault(data.episodes[int(e)], []).append((int(t), int(end)))
    return out


def test_exclude_trains_on_demonstrations_only(ds, tok):
    data = build(ds, tok)  # the default
    assert data.config.trials == "exclude"
    assert data.episodes == ("episode_0", "episode_1") and data.trial_episodes == ()
    assert data.train_samples == 2 * DEMO_STEPS
    assert samples(data) == {e: [(t, DEMO_STEPS) for t in range(DEMO_STEPS)] for e in ("episode_0", "episode_1")}
    rec = data.record()
    assert rec["data_config"]["trials"] == "exclude" and rec["trials"] == "exclude"


def test_corrections_add_exactly_the_correction_spans(ds, tok):
    data = build(ds, tok, trials="corrections")
    assert data.episodes == ("episode_0", "episode_1", "episode_2", "episode_3")  # 4: no correction, left out
    assert data.trial_episodes == ("episode_2", "episode_3")
    n_corr = sum(e - s for spans in CORRECTIONS.values() for s, e in spans)
    assert n_corr == 15 + 7 + 30 and data.train_samples == 2 * DEMO_STEPS + n_corr
    got = samples(data)
    for name, spans in CORRECTIONS.items():
        assert got[name] == [(t, e) for s, e in spans for t in range(s, e)]  # each chunk's targets end with its span
    for name in ("episode_0", "episode_1"):
        assert got[name] == [(t, DEMO_STEPS) for t in range(DEMO_STEPS)]
    rec = data.record()
    assert rec["data_config"]["trials"] == "corrections" and rec["trial_episodes"] == ["episode_2", "episode_3"]

    # a chunk starting 5 steps before a span end: the operator's 5 actions, then padding (no loss on the policy's)
    d = data.train_loader.loader.dataset
    i = next(k for k in range(len(d)) if data.episodes[int(d.ep_of[k])] == "episode_3" and int(d.t_of[k]) == 65)
    item = d[(i, 0)]
    pad = item["action_is_pad"].numpy()
    assert not pad[:5].any() and pad[5:].all()
    with EpisodeReader(ds / "episode_3.hdf5") as r:
        actions = r.action
    assert np.allclose(item["actions_rig"].numpy()[:5], actions[65:70], atol=1e-6)
    # the prompt of a trial step is the command in force (its "prompt" lane), not the empty task
    assert set(d.episodes[data.episodes.index("episode_3")].frame_tasks) == {"pick up the cube"}


def test_all_adds_every_trial_step(ds, tok):
    data = build(ds, tok, trials="all")
    assert data.episodes == tuple(f"episode_{i}" for i in range(5))
    assert data.trial_episodes == ("episode_2", "episode_3", "episode_4")
    assert data.train_samples == 2 * DEMO_STEPS + 3 * TRIAL_STEPS
    assert samples(data)["episode_4"] == [(t, TRIAL_STEPS) for t in range(TRIAL_STEPS)]
    success_only = build(ds, tok, trials="all", outcomes=("success",))  # imitate the successful rollouts
    assert success_only.episodes == ("episode_0", "episode_1", "episode_3", "episode_4")
    assert len({build(ds, tok, trials=m).fingerprint for m in ("exclude", "corrections", "all")}) == 3


def test_trials_only_dataset_and_bad_mode(ds, tok):
    with pytest.raises(EpisodeDataError, match="all trial episodes and trials='exclude'"):
        build(ds, tok, episodes=("episode_2", "episode_4"))
    with pytest.raises(EpisodeDataError, match="none of them has one"):
        build(ds, tok, trials="corrections", episodes=("episode_4",))
    with pytest.raises(ValueError, match="trials must be one of exclude, corrections, all"):
        DataConfig(str(ds), trials="some")
    assert DataConfig.from_json({"source": "x"}).trials == "exclude"  # dataset.json of earlier runs


def test_cli_flag_and_train_tab_combo(qtbot, tmp_path):
    from ui.train_panel import TrainPanel
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    def data_config(argv):
        cfg = config_from_args(build_parser().parse_args(["train", *argv]))
        return cfg.data, DataConfig.from_json({"source": cfg.dataset, **cfg.data})

    data, dc = data_config(["--dataset", "ds", "--out", str(tmp_path / "r"), "--config", "tiny"])
    assert "trials" not in data and dc.trials == "exclude"  # earlier runs' train_config.json still match
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    panel = TrainPanel(settings, runs_root=tmp_path / "runs")
    qtbot.addWidget(panel)
    assert panel.trials.currentData() == "exclude" and "--trials" not in panel.request().argv()
    launched: list[list[str]] = []
    panel._launch = lambda run, args, keep_plot=False, **kw: launched.append(args)
    panel.dataset.setText(str(tmp_path / "ds"))
    panel.trials.setCurrentIndex(panel.trials.findData("corrections"))
    panel.train_btn.click()
    argv = launched[-1]
    assert argv[argv.index("--trials") + 1] == "corrections"
    assert data_config(argv)[1].trials == "corrections"  # the flag the process gets is the DataConfig choice
    settings.sync()
    again = TrainPanel(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat),
                       runs_root=tmp_path / "runs")
    qtbot.addWidget(again)
    assert again.trials.currentData() == "corrections"  # remembered with the tab's other choices
    assert [again.trials.itemData(i) for i in range(again.trials.count())] == ["exclude", "corrections", "all"]


def test_trial_prompt_per_step_without_a_prompt_lane():
    from types import SimpleNamespace

    from finetune.episodes import _trial_prompts
    from recorder.format import Segment

    record = {"prompts": [{"step": 0, "tick": 0, "text": "a", "source": "initial"},
                          {"step": 25, "tick": 6, "text": "b", "source": "operator"}]}
    info = SimpleNamespace(trial=record, segments=[], steps=10, task="task")
    assert _trial_prompts(info) == ("a",) * 6 + ("b",) * 4  # from the tick it took effect
    info.segments = [Segment(2, 4, "lane text", "prompt"), Segment(0, 3, "x", "correction")]
    assert _trial_prompts(info) == ("a", "a", "lane text", "lane text", "a", "a", "b", "b", "b", "b")
    assert _trial_prompts(SimpleNamespace(trial={}, segments=[], steps=3, task="t")) is None
