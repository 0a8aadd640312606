"""Trial statistics: Wilson intervals and Fisher's exact test against hand-computed values, grouping, unlabeled
trials, CSV round trips, and `workbench trial-stats` on a dataset folder of real trial episodes (recorded with
the real writer, the trial record passed through EpisodeWriter.set_extra_attrs)."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from recorder import format as fmt
from recorder.format import Segment
from recorder.quality import QualityThresholds
from recorder.reader import read_info
from recorder.recovery import recover_journal
from recorder.store import DatasetStore
from recorder.finalize import RecorderError
from tests.recorder.helpers import CAMS, tick
from workbench.deploy import trial_stats as ts
from workbench.cli import main as cli_main

THRESHOLDS = QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0)


def trial_record(index: int = 0, policy_id: str = "cube@2000", checkpoint: int | None = 2000,
                 prompt: str = "transfer the cube", mode: str = "sync", ended_by: str = "success",
                 interventions: list[tuple[int, int]] = (), tts: float | None = 0.3, seed: int | None = 17,
                 duration_s: float = 0.38, **more) -> dict:
    """A trial attribute as the trial runner writes it (recorder.format.TRIAL_ATTR); `more`: e.g. the
    simulator's max_reward and closest_m."""
    return more | {"trial_index": index, "session": "2026-11-29T21:00:00", "policy": "runs/cube/policy",
            "policy_id": policy_id, "checkpoint": checkpoint, "mode": mode, "execute_steps": 25, "ensemble": False,
            "prompts": [{"step": 0, "t": 0.0, "text": prompt, "source": "initial"},
                        {"step": 10, "t": 0.2, "text": "and again", "source": "operator"}],
            "chunks": [{"step": 0, "start": 0, "infer_ms": 41.2, "roundtrip_ms": 44.0, "delay_ticks": 0}],
            "interventions": [{"start": s, "end": e} for s, e in interventions], "ended_by": ended_by,
            "outcome_source": "auto", "time_to_success_s": tts, "duration_s": duration_s, "seed": seed}


def record_trial(store: DatasetStore, outcome: str = "success", steps: int = 20, corrections=(), task: str = "",
                 **trial) -> Path:
    """One trial episode through the real writer: ticks, the trial attribute, the outcome; the correction and
    prompt lanes as the store keeps edited segments."""
    w = store.new_episode(CAMS, task=task, control_hz=50, thresholds=THRESHOLDS)
    rec = trial_record(interventions=list(corrections), **trial)
    w.set_extra_attrs({fmt.TRIAL_ATTR: rec})
    for i in range(steps):
        w.append(tick(i))
    w.set_outcome(outcome)
    saved = w.stop()
    segs = [Segment(0, steps, rec["prompts"][0]["text"], "prompt")]
    segs += [Segment(s, e, "operator takeover", "correction") for s, e in corrections]
    store.set_segments(saved.name, segs)
    return saved.path


# -- hand-computed statistics ------------------------------------------------------------------------------------

def test_wilson_interval_hand_computed():
    # Wilson: centre = (p + z^2/2n) / (1 + z^2/n), half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n), z^2 = 3.841459
    # 8/10: z^2/n = .384146, denom 1.384146; centre = (.8 + .192073)/1.384146 = .716739;
    #       half = 1.959964 * sqrt(.016 + .009604) / 1.384146 = .226577  ->  (.4902, .9433)
    lo, hi = ts.wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    # 0/n: lo = 0, hi = (z^2/n) / (1 + z^2/n) = .384146 / 1.384146 = .2775
    assert ts.wilson_interval(0, 10)[0] == 0.0 and round(ts.wilson_interval(0, 10)[1], 4) == 0.2775
    # n/n: hi = 1, lo = 1 / (1 + z^2/n) = 1 / 1.384146 = .7225
    assert ts.wilson_interval(10, 10)[1] == 1.0 and round(ts.wilson_interval(10, 10)[0], 4) == 0.7225
    # 1/1: lo = 1 / (1 + z^2) = 1 / 4.841459 = .2065
    assert ts.wilson_interval(1, 1) == (pytest.approx(0.20655, abs=1e-5), 1.0)
    assert ts.wilson_interval(0, 0) == (0.0, 1.0)
    # z = 1 (68%): 5/10 -> centre .5, half = sqrt(.025 + .0025)/1.1 = .150756
    assert ts.wilson_interval(5, 10, z=1.0) == (pytest.approx(0.349244, abs=1e-6), pytest.approx(0.650756, abs=1e-6))
    with pytest.raises(ValueError):
        ts.wilson_interval(11, 10)


def test_fisher_exact_textbook_values():
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: P(x) = C(4,x) C(4,4-x) / C(8,4) = (1, 16, 36, 16, 1) / 70;
    # two-sided: the tables at most as likely as x=3: (1 + 16 + 16 + 1) / 70 = .4857; one table more extreme.
    assert ts.fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert ts.fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70)  # the perfect taster: (1 + 1) / 70 = .0286
    # [[1, 9], [11, 3]]  (a classic textbook example): two-sided p = .002759
    assert ts.fisher_exact(1, 10, 11, 14) == pytest.approx(0.0027594, abs=1e-6)
    assert ts.fisher_exact(5, 10, 5, 10) == 1.0
    assert ts.fisher_exact(0, 0, 3, 5) == 1.0


def test_two_proportion_z_test_hand_computed():
    # 15/20 vs 8/20: pooled 23/40 = .575, se = sqrt(.575 * .425 * (1/20 + 1/20)) = .156325, z = .35 / .156325
    # = 2.2389, p = erfc(2.2389 / sqrt 2) = .0252
    assert ts.two_proportion_p(15, 20, 8, 20) == pytest.approx(0.02516, abs=5e-5)
    assert ts.two_proportion_p(10, 10, 5, 5) == 1.0  # no variation at all
    assert ts.two_proportion_p(3, 10, 0, 0) is None


def _records(spec) -> list[ts.TrialRecord]:
    """(policy_id, prompt, outcome, tts, interventions) -> records."""
    base = ts.TrialRecord(name="", path=Path("x"), policy_id="", checkpoint=None, prompt="", mode="sync",
                          outcome="", ended_by="", duration_s=10.0, time_to_success_s=None, interventions=0,
                          intervention_s=0.0, seed=None)
    return [dataclasses.replace(base, name=f"episode_{i}", policy_id=p, prompt=pr, outcome=o, time_to_success_s=t,
                                interventions=k, intervention_s=1.5 * k, duration_s=8.0 + i % 3)
            for i, (p, pr, o, t, k) in enumerate(spec)]


RECS = _records(
    [("A", "cube", "success", 5.0, 0)] * 6 + [("A", "cube", "success", None, 1)] + [("A", "cube", "failure", None, 2)]
    + [("A", "towel", "partial", None, 0)] + [("A", "towel", "unlabeled", None, 0)] * 2
    + [("B", "cube", "success", 7.0, 0)] * 2 + [("B", "cube", "success", 9.0, 1)] + [("B", "cube", "failure", None, 0)] * 5)


def test_grouping_and_unlabeled_trials():
    by_policy = ts.summarize(RECS)
    assert [g.key for g in by_policy] == [("A",), ("B",)]
    a, b = by_policy
    assert (a.n, a.successes, a.partial, a.failures, a.unlabeled, a.labeled) == (11, 7, 1, 1, 2, 9)
    assert a.rate == pytest.approx(7 / 9)  # unlabeled are not in the denominator, partial is
    assert (a.ci_lo, a.ci_hi) == pytest.approx(ts.wilson_interval(7, 9))
    assert a.mean_time_to_success_s == 5.0 and a.median_time_to_success_s == 5.0  # the success without a time: out
    assert a.interventions_per_trial == pytest.approx(3 / 11) and a.intervention_s_per_trial == pytest.approx(4.5 / 11)
    assert b.mean_time_to_success_s == pytest.approx(23 / 3) and b.median_time_to_success_s == 7.0
    assert b.rate == pytest.approx(3 / 8) and b.label == "policy_id=B"
    two = ts.summarize(RECS, by=("policy_id", "prompt"))
    assert [(g.key, g.n, g.rate) for g in two] == [(("A", "cube"), 8, 7 / 8), (("A", "towel"), 3, 0.0),
                                                   (("B", "cube"), 8, 3 / 8)]
    only_unlabeled = ts.summarize([r for r in RECS if r.outcome == "unlabeled"])[0]
    assert only_unlabeled.rate is None and (only_unlabeled.ci_lo, only_unlabeled.ci_hi) == (0.0, 1.0)
    assert ts.summarize(RECS, by=("checkpoint",))[0].key == (None,)
    with pytest.raises(ValueError, match="cannot group by outcome"):
        ts.summarize(RECS, by=("outcome",))


def test_compare_verdicts_do_not_overclaim():
    a, b = ts.summarize(RECS)
    c = ts.compare(a, b)
    assert (c.successes_a, c.n_a, c.successes_b, c.n_b) == (7, 9, 3, 8)
    assert c.fisher_p == pytest.approx(ts.fisher_exact(7, 9, 3, 8)) and c.fisher_p > 0.05
    assert c.difference == pytest.approx(7 / 9 - 3 / 8)
    assert c.verdict.startswith("no significant difference at 5% (p=") and "n=9 vs 8" in c.verdict
    assert not c.significant
    strong = ts.group_stats(_records([("C", "", "success", None, 0)] * 19 + [("C", "", "failure", None, 0)]),
                            ("policy_id",), ("C",))
    weak = ts.group_stats(_records([("D", "", "success", None, 0)] * 5 + [("D", "", "failure", None, 0)] * 15),
                          ("policy_id",), ("D",))
    c = ts.compare(weak, strong)
    assert c.significant and c.difference == pytest.approx(-0.7)
    assert c.verdict.startswith("policy_id=C has a higher success rate than policy_id=D, significant at 5%")
    assert "19/20" in c.verdict and "70 points apart" in c.verdict
    empty = ts.group_stats(_records([("E", "", "unlabeled", None, 0)]), ("policy_id",), ("E",))
    assert ts.compare(strong, empty).verdict.startswith("cannot compare: policy_id=E has no labeled trials")


def test_csv_round_trips(tmp_path):
    ts.write_trials_csv(tmp_path / "trials.csv", RECS)
    assert ts.read_trials_csv(tmp_path / "trials.csv") == RECS
    groups = ts.summarize(RECS, by=("policy_id", "prompt"))
    ts.write_csv(tmp_path / "groups.csv", groups)
    rows = list(csv.DictReader(open(tmp_path / "groups.csv")))
    assert [(r["policy_id"], r["prompt"]) for r in rows] == [g.key for g in groups]
    for r, g in zip(rows, groups):
        for col in ts.GROUP_COLUMNS:
            v = getattr(g, col)
            assert r[col] == ("" if v is None else str(v)), col
            if isinstance(v, float):
                assert float(r[col]) == v  # exact


# -- real trial episodes ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trial_ds(tmp_path_factory):
    """One demonstration, seven trials of two policies (one trial in the trash, one relabeled afterwards)."""
    store = DatasetStore(tmp_path_factory.mktemp("trials") / "ds")
    w = store.new_episode(CAMS, task="transfer the cube", control_hz=50, thresholds=THRESHOLDS)
    for i in range(20):
        w.append(tick(i))
    w.set_outcome("success")
    w.stop()  # episode_0: a demonstration
    record_trial(store, "success", policy_id="cube@2000", corrections=[(5, 10)], seed=1)  # 1
    record_trial(store, "success", policy_id="cube@2000", tts=0.2, seed=2)  # 2
    record_trial(store, "failure", policy_id="cube@2000", ended_by="time_limit", tts=None, seed=3)  # 3
    record_trial(store, "success", policy_id="cube@1000", checkpoint=1000, prompt="pick up the cube", seed=None,
                 corrections=[(2, 4), (8, 16)])  # 4
    record_trial(store, "failure", policy_id="cube@1000", checkpoint=1000, tts=None, ended_by="operator")  # 5
    record_trial(store, "success", policy_id="cube@1000", checkpoint=1000)  # 6: deleted below
    record_trial(store, "unlabeled", policy_id="cube@1000", checkpoint=1000, tts=None, ended_by="estop")  # 7
    store.remove("episode_6")
    store.label("episode_3", "partial")  # an operator's relabel (sidecar) wins over the recorded outcome
    return store.root


def test_set_extra_attrs_stores_the_trial_record(trial_ds, tmp_path):
    info = read_info(trial_ds / "episode_1.hdf5")
    assert info.trial == trial_record(interventions=[(5, 10)], seed=1)
    assert json.loads(info.extra[fmt.TRIAL_ATTR]) == info.trial  # stored as JSON text
    assert read_info(trial_ds / "episode_0.hdf5").trial is None and read_info(trial_ds / "episode_0.hdf5").extra == {}
    store = DatasetStore(tmp_path / "other")
    w = store.new_episode(CAMS, control_hz=50, thresholds=THRESHOLDS)
    with pytest.raises(ValueError, match="recorder writes itself"):
        w.set_extra_attrs({"outcome": "success"})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        w.set_extra_attrs({"x": object()})
    w.set_extra_attrs({"a": 1, "b": "text", "c": [1, 2]})
    w.set_extra_attrs({"a": 2.5, "d": True})
    w.append(tick(0))
    w.append(tick(1))
    info = read_info(w.stop().path)
    assert info.extra == {"a": 2.5, "b": "text", "c": "[1, 2]", "d": True}
    with pytest.raises(RecorderError):
        w.set_extra_attrs({"e": 1})


def test_a_recovered_trial_keeps_its_attributes(tmp_path):
    """Killed before stop: recovery rebuilds the episode from the journal, trial attribute included."""
    store = DatasetStore(tmp_path / "ds")
    w = store.new_episode(CAMS, control_hz=50, thresholds=THRESHOLDS)
    w.set_extra_attrs({fmt.TRIAL_ATTR: trial_record(ended_by="error")})
    for i in range(10):
        w.append(tick(i))
    w._shutdown()  # the writer thread drains and syncs the journal; no finalize: as if the process died now
    saved = recover_journal(w.journal_path, tmp_path / "recovered.hdf5")
    info = read_info(saved.path)
    assert info.recovered and info.steps == 10 and info.trial == trial_record(ended_by="error")
    w._builder.close()


def test_load_trials_from_a_dataset(trial_ds):
    recs = ts.load_trials(trial_ds)
    assert [r.name for r in recs] == ["episode_1", "episode_2", "episode_3", "episode_4", "episode_5", "episode_7"]
    r1, r3, r4 = recs[0], recs[2], recs[3]
    assert (r1.policy_id, r1.checkpoint, r1.prompt, r1.mode, r1.outcome, r1.ended_by, r1.seed) == \
        ("cube@2000", 2000, "transfer the cube", "sync", "success", "success", 1)
    assert r1.interventions == 1 and r1.intervention_s == pytest.approx(5 / 50) and r1.time_to_success_s == 0.3
    assert r1.duration_s == 0.38 and r1.path == trial_ds / "episode_1.hdf5" and r1.session == "2026-11-29T21:00:00"
    assert r3.outcome == "partial" and r3.time_to_success_s is None
    assert r4.prompt == "pick up the cube" and r4.interventions == 2 and r4.intervention_s == pytest.approx(10 / 50)
    assert r4.seed is None
    assert [r.name for r in ts.load_trials(trial_ds, include_deleted=True)][-2:] == ["episode_6", "episode_7"]


def test_damaged_trials_are_skipped(tmp_path):
    import h5py

    store = DatasetStore(tmp_path / "ds")
    good = record_trial(store, "success")
    bad_json = record_trial(store, "success")
    truncated = record_trial(store, "failure")
    with h5py.File(bad_json, "a") as f:
        f.attrs[fmt.TRIAL_ATTR] = "{not json"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    assert [r.name for r in ts.load_trials(store.root)] == [good.stem]


def test_cli_prints_the_table_compares_and_writes_csv(trial_ds, tmp_path, capsys):
    out, tout = tmp_path / "g.csv", tmp_path / "t.csv"
    rc = cli_main(["trial-stats", str(trial_ds), "--by", "policy_id,prompt", "--compare", "cube@2000", "cube@1000",
                   "--csv", str(out), "--trials-csv", str(tout)])
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = text.splitlines()
    assert lines[0] == f"6 trials in {trial_ds}"
    assert lines[1].split()[:4] == ["policy_id", "prompt", "n", "success"]
    # cube@1000 / "pick up the cube": 1 trial, 1 success
    assert any(l.startswith("cube@1000") and "pick up the cube" in l and " 100% " in l for l in lines[3:6])
    row = next(l for l in lines[3:6] if l.startswith("cube@2000"))
    assert row.split()[4:9] == ["3", "2", "1", "0", "0"] and " 67% " in row  # 2 of 3: the relabel counts
    assert "cube@2000: 2/3 labeled trials succeeded (67%)" in text
    assert "cube@1000: 1/2 labeled trials succeeded (50%)" in text  # the unlabeled trial is out of the rate
    assert f"Fisher exact p = {ts.fisher_exact(2, 3, 1, 2):.3g}" in text
    assert "no significant difference at 5% (p=1, n=3 vs 2)" in text
    groups = list(csv.DictReader(open(out)))
    assert {(g["policy_id"], g["prompt"], g["n"]) for g in groups} == {
        ("cube@2000", "transfer the cube", "3"), ("cube@1000", "transfer the cube", "2"),
        ("cube@1000", "pick up the cube", "1")}
    assert ts.read_trials_csv(tout) == ts.load_trials(trial_ds)

    assert cli_main(["trial-stats", str(trial_ds), "--compare", "cube@2000", "nope"]) == 2
    assert "no trials of policy nope" in capsys.readouterr().err
    assert cli_main(["trial-stats", str(trial_ds), "--by", "outcome"]) == 2
    assert math.isfinite(ts.summarize(ts.load_trials(trial_ds))[0].mean_duration_s)


def test_cli_compares_policies_whose_trials_are_in_two_folders(trial_ds, tmp_path, capsys):
    """Each policy's trials in its own folder (the default `<data root>/trials/<policy>`): trial-stats takes both."""
    import shutil

    a, b = tmp_path / "cube_2000", tmp_path / "cube_1000"
    for dst, keep in ((a, (1, 2, 3)), (b, (4, 5, 7))):
        dst.mkdir()
        for k in keep:
            for f in trial_ds.glob(f"episode_{k}.*"):
                shutil.copy(f, dst / f.name)
    rc = cli_main(["trial-stats", str(a), str(b), "--compare", "cube@2000", "cube@1000"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.splitlines()[0] == f"6 trials in {a}, {b}"
    assert "cube@2000: 2/3 labeled trials succeeded (67%)" in text and "cube@1000: 1/2 labeled" in text
