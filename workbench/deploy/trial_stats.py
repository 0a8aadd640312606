"""Success statistics of policy trials: which policy, checkpoint or prompt works, and how sure we can be.

Trials are ordinary episodes in a dataset folder that carry the `recorder.format.TRIAL_ATTR` attribute (a JSON
record written by the trial runner) and an outcome label. `load_trials` turns them into `TrialRecord`s,
`summarize` groups them (policy, checkpoint, prompt, mode) with Wilson 95% intervals, and `compare` tests two
groups against each other (Fisher's exact test and the two-proportion z-test) with a verdict that says only what
the numbers support. Plain Python (math, csv): no scipy.

Outcomes: "success" counts as a success; "failure" and "partial" (got part-way) as not; "unlabeled" trials are
counted but left out of the rate (nobody has judged them yet), and so are "aborted" ones (cut short by an error,
the e-stop, refused chunks or a crash: the policy was not given its trial), shown in a column of their own.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

Z95 = 1.959963984540054  # the 97.5% normal quantile: two-sided 95%
GROUP_FIELDS: tuple[str, ...] = ("policy_id", "checkpoint", "prompt", "mode")


# ====================================================================================================== records
@dataclass(frozen=True)
class TrialRecord:
    """One trial episode, flattened for statistics."""

    name: str  # episode name (episode_<i>)
    path: Path
    policy_id: str  # the trial record's policy_id (else its policy folder)
    checkpoint: int | None
    prompt: str  # the initial prompt (the trial's first prompt; else the episode's task)
    mode: str  # sync / async / ...
    outcome: str  # success / failure / partial / unlabeled / aborted (relabels in the sidecar included)
    ended_by: str  # success / time_limit / operator / estop / error / aborted (refusals) / interrupted (recovered)
    duration_s: float
    time_to_success_s: float | None
    interventions: int  # operator takeovers
    intervention_s: float  # seconds under operator control
    seed: int | None
    session: str = ""


def _opt_int(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None or v == "" else float(v)


def _initial_prompt(trial: dict[str, Any], task: str) -> str:
    prompts = [p for p in trial.get("prompts") or [] if isinstance(p, dict) and p.get("text")]
    if not prompts:
        return task
    initial = [p for p in prompts if p.get("source") == "initial"]
    first = initial[0] if initial else min(prompts, key=lambda p: (p.get("step") or 0))
    return str(first["text"])


def record_from_info(info) -> TrialRecord | None:
    """A `recorder.reader.EpisodeInfo` -> TrialRecord, or None for a non-trial episode. A malformed trial
    attribute raises ValueError."""
    trial = info.trial
    if trial is None:
        return None
    hz = info.control_hz
    if not hz and info.steps > 1 and info.duration_s and info.duration_s > 0:
        hz = (info.steps - 1) / info.duration_s
    spans = [(int(s["start"]), int(s["end"])) for s in trial.get("interventions") or []]
    if "interventions" not in trial:  # an older or hand-made record: the correction lane says the same
        spans = [(s.start, s.end) for s in info.segments if s.lane == "correction"]
    steps = sum(max(0, e - s) for s, e in spans)
    duration = _opt_float(trial.get("duration_s"))
    if duration is None:
        duration = float(info.duration_s)
    return TrialRecord(
        name=info.name, path=Path(info.path),
        policy_id=str(trial.get("policy_id") or trial.get("policy") or ""),
        checkpoint=_opt_int(trial.get("checkpoint")),
        prompt=_initial_prompt(trial, info.task), mode=str(trial.get("mode") or ""),
        outcome=info.outcome, ended_by=str(trial.get("ended_by") or ""), duration_s=duration,
        time_to_success_s=_opt_float(trial.get("time_to_success_s")),
        interventions=len(spans), intervention_s=steps / hz if hz else (0.0 if not steps else float("nan")),
        seed=_opt_int(trial.get("seed")), session=str(trial.get("session") or ""))


def load_trials(dataset_dir: str | Path, include_deleted: bool = False) -> list[TrialRecord]:
    """Trial episodes of a dataset folder, in episode order. Demonstrations (no trial attribute) are ignored;
    damaged episodes and ones whose trial attribute cannot be read are skipped; the trash only on request."""
    from recorder.reader import read_info
    from recorder.store import READ_ERRORS, DatasetStore

    store = DatasetStore(dataset_dir, create=False)
    out: list[TrialRecord] = []
    for s in store.list(include_deleted=include_deleted):
        path = (store.trash if s.deleted else store.root) / s.file_name
        try:
            info = read_info(path)
            if info.problems:
                continue
            rec = record_from_info(info)
        except READ_ERRORS:
            continue
        if rec is not None:
            out.append(rec)
    return out


# ====================================================================================================== statistics
def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default: 95%); (0, 1) when n = 0. Unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0/n and n/n."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], not {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def fisher_exact(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on [[s1, n1-s1], [s2, n2-s2]]: the probability, under equal
    rates and fixed margins, of a table at most as likely as the observed one (exact integer arithmetic)."""
    f1, f2 = n1 - s1, n2 - s2
    if min(s1, s2, f1, f2) < 0:
        raise ValueError("successes must be in [0, n]")
    succ = s1 + s2
    lo, hi = max(0, succ - n2), min(succ, n1)
    weight = [math.comb(n1, x) * math.comb(n2, succ - x) for x in range(lo, hi + 1)]  # / comb(N, succ)
    observed = weight[s1 - lo]
    p = sum(w for w in weight if w <= observed) / math.comb(n1 + n2, succ)
    return min(1.0, p)


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test (a large-sample approximation); None when a group
    is empty, 1.0 when both rates are 0 or both 1 (no variation to test)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class GroupStats:
    """Trials sharing the values of the `by` fields. rate = successes / labeled, with labeled = n - unlabeled -
    aborted: unlabeled and aborted trials are counted in n (and in the intervention and duration means) but not in the rate or its
    interval; partial counts as not a success. Undefined statistics are None."""

    by: tuple[str, ...]
    key: tuple[Any, ...]  # the values of the `by` fields
    n: int
    successes: int
    partial: int
    failures: int
    unlabeled: int
    aborted: int  # cut short (error, e-stop, refused chunks, crash): in n, never in the rate (not a failure)
    rate: float | None  # None when no trial is labeled
    ci_lo: float  # Wilson 95% interval of the rate; (0, 1) when no trial is labeled
    ci_hi: float
    mean_time_to_success_s: float | None  # over successful trials that recorded a time to success
    median_time_to_success_s: float | None
    interventions_per_trial: float
    intervention_s_per_trial: float
    mean_duration_s: float | None

    @property
    def labeled(self) -> int:
        return self.n - self.unlabeled - self.aborted

    @property
    def label(self) -> str:
        return ", ".join(f"{f}={'-' if v is None else v}" for f, v in zip(self.by, self.key)) or "all"

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = dict(zip(self.by, self.key))
        for f in dataclasses.fields(self):
            if f.name not in ("by", "key"):
                row[f.name] = getattr(self, f.name)
        return row


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else None


def group_stats(records: Sequence[TrialRecord], by: tuple[str, ...] = (), key: tuple[Any, ...] = ()) -> GroupStats:
    """The statistics of one set of trials (see GroupStats)."""
    count = {o: sum(r.outcome == o for r in records)
             for o in ("success", "partial", "failure", "unlabeled", "aborted")}
    labeled = len(records) - count["unlabeled"] - count["aborted"]
    lo, hi = wilson_interval(count["success"], labeled)
    tts = [r.time_to_success_s for r in records if r.outcome == "success" and r.time_to_success_s is not None]
    n = len(records)
    return GroupStats(
        by=tuple(by), key=tuple(key), n=n, successes=count["success"], partial=count["partial"],
        failures=count["failure"], unlabeled=count["unlabeled"], aborted=count["aborted"],
        rate=count["success"] / labeled if labeled else None, ci_lo=lo, ci_hi=hi,
        mean_time_to_success_s=_mean(tts), median_time_to_success_s=statistics.median(tts) if tts else None,
        interventions_per_trial=sum(r.interventions for r in records) / n if n else 0.0,
        intervention_s_per_trial=(_mean([r.intervention_s for r in records]) or 0.0) if n else 0.0,
        mean_duration_s=_mean([r.duration_s for r in records]))


def _sort_key(key: tuple[Any, ...]) -> tuple:
    return tuple((v is None, "" if v is None else v) for v in key)


def summarize(records: Iterable[TrialRecord], by: Sequence[str] = ("policy_id",)) -> list[GroupStats]:
    """Group trials by any of GROUP_FIELDS (policy_id, checkpoint, prompt, mode) and compute each group's
    statistics, sorted by key (missing values last). Unlabeled trials are counted (`unlabeled`, and in `n`) but
    excluded from the success rate's denominator and its Wilson 95% interval."""
    by = tuple(by)
    bad = [f for f in by if f not in GROUP_FIELDS]
    if bad:
        raise ValueError(f"cannot group by {', '.join(bad)}: choose from {', '.join(GROUP_FIELDS)}")
    groups: dict[tuple, list[TrialRecord]] = {}
    for r in records:
        groups.setdefault(tuple(getattr(r, f) for f in by), []).append(r)
    return [group_stats(groups[k], by, k) for k in sorted(groups, key=_sort_key)]


@dataclass(frozen=True)
class Comparison:
    """Success rates of two groups compared (labeled trials only). difference = rate_a - rate_b."""

    a: str
    b: str
    successes_a: int
    n_a: int  # labeled trials
    successes_b: int
    n_b: int
    rate_a: float | None
    rate_b: float | None
    difference: float | None
    fisher_p: float
    z_test_p: float | None
    alpha: float
    verdict: str

    @property
    def significant(self) -> bool:
        return self.fisher_p < self.alpha


def compare(a: GroupStats, b: GroupStats, alpha: float = 0.05) -> Comparison:
    """Fisher's exact test (two-sided; what the verdict uses: exact at the small n of robot trials) and the
    two-proportion z-test on the labeled trials of two groups. A non-significant result is reported as "no
    significant difference", never as "equal"."""
    sa, na, sb, nb = a.successes, a.labeled, b.successes, b.labeled
    fp = fisher_exact(sa, na, sb, nb)
    zp = two_proportion_p(sa, na, sb, nb)
    ra = sa / na if na else None
    rb = sb / nb if nb else None
    diff = None if ra is None or rb is None else ra - rb
    pct = f"{100 * alpha:g}%"
    counts = f"{sa}/{na} vs {sb}/{nb}"
    if not na or not nb:
        empty = a.label if not na else b.label
        verdict = f"cannot compare: {empty} has no labeled trials ({counts})"
    elif fp < alpha:
        hi_, lo_ = (a.label, b.label) if sa / na > sb / nb else (b.label, a.label)
        verdict = (f"{hi_} has a higher success rate than {lo_}, significant at {pct} "
                   f"(Fisher p={fp:.2g}, {counts}: {100 * abs(diff or 0):.0f} points apart)")
    else:
        verdict = f"no significant difference at {pct} (p={fp:.2g}, n={na} vs {nb})"
        if na < 30 or nb < 30:
            verdict += "; with this few trials only large differences would show"
    return Comparison(a=a.label, b=b.label, successes_a=sa, n_a=na, successes_b=sb, n_b=nb, rate_a=ra, rate_b=rb,
                      difference=diff, fisher_p=fp, z_test_p=zp, alpha=alpha, verdict=verdict)


# ====================================================================================================== CSV
GROUP_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GroupStats) if f.name not in ("by", "key"))
TRIAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialRecord))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)  # repr: floats read back exactly


def write_csv(path: str | Path, groups: Sequence[GroupStats]) -> None:
    """One row per group: the `by` fields, then GROUP_COLUMNS. Empty cells are undefined values."""
    by = groups[0].by if groups else ()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*by, *GROUP_COLUMNS])
        for g in groups:
            row = g.as_row()
            w.writerow([_cell(row[c]) for c in (*by, *GROUP_COLUMNS)])


def write_trials_csv(path: str | Path, records: Sequence[TrialRecord]) -> None:
    """One row per trial, columns TRIAL_COLUMNS; read back with read_trials_csv."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRIAL_COLUMNS)
        for r in records:
            w.writerow([_cell(getattr(r, c)) for c in TRIAL_COLUMNS])


def read_trials_csv(path: str | Path) -> list[TrialRecord]:
    with open(path, newline="") as f:
        return [TrialRecord(
            name=row["name"], path=Path(row["path"]), policy_id=row["policy_id"],
            checkpoint=_opt_int(row["checkpoint"]), prompt=row["prompt"], mode=row["mode"], outcome=row["outcome"],
            ended_by=row["ended_by"], duration_s=float(row["duration_s"] or "nan"),
            time_to_success_s=_opt_float(row["time_to_success_s"]), interventions=int(row["interventions"]),
            intervention_s=float(row["intervention_s"] or "nan"), seed=_opt_int(row["seed"]),
            session=row.get("session", "")) for row in csv.DictReader(f)]


# ====================================================================================================== text
def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def format_table(groups: Sequence[GroupStats]) -> str:
    """A plain-text table of grouped statistics (rates in percent)."""
    by = groups[0].by if groups else ()
    head = [*by, "n", "success", "partial", "fail", "unlab", "abort", "rate", "95% CI", "t_succ mean", "t_succ med",
            "interv/trial", "duration"]
    rows = []
    for g in groups:
        rows.append([*("-" if v is None else str(v) for v in g.key), str(g.n), str(g.successes), str(g.partial),
                     str(g.failures), str(g.unlabeled), str(g.aborted),
                     "-" if g.rate is None else f"{100 * g.rate:.0f}%", f"{100 * g.ci_lo:.0f}-{100 * g.ci_hi:.0f}%",
                     _fmt(g.mean_time_to_success_s, ".1f"), _fmt(g.median_time_to_success_s, ".1f"),
                     f"{g.interventions_per_trial:.2f}", _fmt(g.mean_duration_s, ".1f")])
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    numeric_from = len(by)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < numeric_from else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])
