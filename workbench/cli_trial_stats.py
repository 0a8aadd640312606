"""`workbench trial-stats DATASET [DATASET ...]`: success rates of policy trials with 95% intervals, and policy comparisons."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trial-stats", help="success rates of policy trials (Wilson 95%% intervals), compare two policies",
        description="Summarize the trial episodes of a dataset folder: per group (policy, checkpoint, prompt, "
                    "mode) the trial count, successes / partial / failures / unlabeled / aborted, the success rate with "
                    "its Wilson 95% interval (unlabeled and aborted trials are left out of the rate), time to success, "
                    "interventions per trial and duration. --compare tests two policies with Fisher's exact test.")
    p.add_argument("dataset", metavar="DATASET", nargs="+",
                   help="dataset folder(s) with trial episodes: trials go to one folder per policy by default "
                        "(<data root>/trials/<policy>), so give both to compare two policies")
    p.add_argument("--by", default="policy_id",
                   help="comma-separated grouping fields: policy_id, checkpoint, prompt, mode [default: policy_id]")
    p.add_argument("--compare", nargs=2, metavar=("POLICY_A", "POLICY_B"),
                   help="compare the success rates of two policy ids")
    p.add_argument("--csv", metavar="OUT", help="write the grouped statistics as CSV")
    p.add_argument("--trials-csv", metavar="OUT", help="write one CSV row per trial")
    p.add_argument("--include-deleted", action="store_true", help="count trials in the trash too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.deploy import trial_stats as ts

    by = tuple(f.strip() for f in args.by.split(",") if f.strip())
    bad = [f for f in by if f not in ts.GROUP_FIELDS]
    if bad:
        print(f"error: cannot group by {', '.join(bad)}; choose from {', '.join(ts.GROUP_FIELDS)}", file=sys.stderr)
        return 2
    records = [r for folder in args.dataset for r in ts.load_trials(folder, include_deleted=args.include_deleted)]
    where = ", ".join(args.dataset)
    if not records:
        print(f"{where}: no trial episodes")
        return 0
    groups = ts.summarize(records, by=by)
    print(f"{len(records)} trials in {where}")
    print(ts.format_table(groups))
    if args.csv:
        ts.write_csv(args.csv, groups)
    if args.trials_csv:
        ts.write_trials_csv(args.trials_csv, records)
    if args.compare:
        per_policy = {g.key[0]: g for g in ts.summarize(records, by=("policy_id",))}
        missing = [x for x in args.compare if x not in per_policy]
        if missing:
            print(f"error: no trials of policy {', '.join(missing)}; policies here: {', '.join(sorted(per_policy))}",
                  file=sys.stderr)
            return 2
        c = ts.compare(per_policy[args.compare[0]], per_policy[args.compare[1]])
        print()
        for name, s, n, r in ((c.a, c.successes_a, c.n_a, c.rate_a), (c.b, c.successes_b, c.n_b, c.rate_b)):
            print(f"{name}: {s}/{n} labeled trials succeeded" + ("" if r is None else f" ({100 * r:.0f}%)"))
        zp = "-" if c.z_test_p is None else f"{c.z_test_p:.3g}"
        print(f"Fisher exact p = {c.fisher_p:.3g}; two-proportion z-test p = {zp}")
        print(c.verdict)
    return 0
