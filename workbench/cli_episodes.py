"""`workbench episodes ...`: list, show, label, annotate, remove/restore, recover, import, export, push."""
from __future__ import annotations

from pathlib import Path

from drivers.arm import DEFAULT_CONTROL_HZ
from recorder.format import OUTCOMES


def register(sub) -> None:
    p = sub.add_parser("episodes", help="manage a dataset folder of episodes",
                       description="List, inspect, label and annotate episodes; soft-delete and restore; recover "
                                   "crashed recordings; import ALOHA HDF5; export to LeRobot v3.0; push to the hub.")
    p.add_argument("dataset", type=Path, help="dataset folder")
    es = p.add_subparsers(dest="episodes_cmd", metavar="ACTION", required=True)
    ls = es.add_parser("list", help="one line per episode")
    ls.add_argument("--all", action="store_true", help="include the trash")
    ls.set_defaults(func=_list)
    sh = es.add_parser("show", help="metadata, segments and the quality report of one episode")
    sh.add_argument("episode")
    sh.set_defaults(func=_show)
    lb = es.add_parser("label", help="set the outcome (success/failure/unlabeled) and notes")
    lb.add_argument("episode")
    lb.add_argument("outcome", choices=list(OUTCOMES))
    lb.add_argument("--notes")
    lb.set_defaults(func=_label)
    an = es.add_parser("annotate", help="add (START END TEXT) or remove (--remove N) a segment",
                       description="Segments live in two lanes, 'auto' (the demonstrator's phases) and 'operator'; "
                                   "within a lane they never overlap: a new segment takes its span and trims or "
                                   "splits the neighbours it covers.")
    an.add_argument("episode")
    an.add_argument("segment", nargs="*", help="START END TEXT (steps, end exclusive)")
    an.add_argument("--lane", choices=["operator", "auto"], default="operator", help="lane of a new segment")
    an.add_argument("--remove", type=int, help="remove segment number N (as `show` numbers them)")
    an.set_defaults(func=_annotate)
    rm = es.add_parser("rm", help="move episodes to the trash (soft delete)")
    rm.add_argument("episode", nargs="+")
    rm.set_defaults(func=_rm)
    rs = es.add_parser("restore", help="bring episodes back from the trash")
    rs.add_argument("episode", nargs="+")
    rs.set_defaults(func=_restore)
    rc = es.add_parser("recover", help="turn crashed recordings into episodes (or quarantine them); list damaged "
                                       "episodes, and with --quarantine set them aside")
    rc.add_argument("--quarantine", action="store_true",
                    help="move damaged episode files into DATASET/.quarantine/ (each with a .reason.txt)")
    rc.set_defaults(func=_recover)
    im = es.add_parser("import", help="import an ALOHA HDF5 folder (ALOHA 1, ALOHA 2, Mobile ALOHA)")
    im.add_argument("source", type=Path)
    im.add_argument("--task", default="")
    im.add_argument("--fps", type=float, default=DEFAULT_CONTROL_HZ)
    im.set_defaults(func=_import)
    ex = es.add_parser("export", help="export to a LeRobot v3.0 folder")
    ex.add_argument("out", type=Path)
    ex.add_argument("--outcome", action="append", help="keep only these outcomes (repeatable)")
    ex.add_argument("--quality", action="append", help="keep only these quality statuses, e.g. pass (repeatable)")
    ex.add_argument("--preset", choices=["good", "all"],
                    help="good: successes that passed quality (same as --outcome success --quality pass)")
    ex.add_argument("--task-from", choices=["task", "segments"], default="task",
                    help="what each frame's task is: the episode's task prompt (default), or its segment text "
                         "(sub-task training). Segment text is always exported as subtask_index either way.")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export in OUT")
    ex.set_defaults(func=_export)
    rp = es.add_parser("replay", help="replay an episode's actions on the follower arms (through the safety layer)")
    rp.add_argument("episode")
    rp.add_argument("--rig", default="sim-transfer-cube", help="preset name or rig TOML file")
    rp.set_defaults(func=_replay)

    pu = es.add_parser("push", help="push a LeRobot export folder to the Hugging Face hub")
    pu.add_argument("export_dir", type=Path)
    pu.add_argument("repo_id")
    pu.add_argument("--public", action="store_true")
    pu.set_defaults(func=_push)


def _store(args, create=False):
    from recorder.store import DatasetStore

    return DatasetStore(args.dataset, create=create)


def _list(args) -> int:
    store = _store(args)
    everything = store.list(include_deleted=args.all, include_damaged=True)
    eps = [e for e in everything if not e.damaged]
    print(f"{'episode':14s} {'steps':>6s} {'secs':>6s} {'outcome':10s} {'quality':7s} {'segs':>4s}  task")
    for e in eps:
        print(f"{e.name:14s} {e.steps:6d} {e.duration_s:6.1f} {e.outcome:10s} {e.quality:7s} {e.segments:4d}  "
              f"{e.task}{'  [trash]' if e.deleted else ''}{'  [recovered]' if e.recovered else ''}")
    print(f"{len(eps)} episodes")
    _print_damaged([e for e in everything if e.damaged], args.dataset)
    return 0


def _print_damaged(damaged, dataset) -> None:
    if not damaged:
        return
    print(f"{len(damaged)} damaged (skipped by export):")
    for e in damaged:
        print(f"  DAMAGED {e.file_name}{' [trash]' if e.deleted else ''}: {e.damaged}")
    print(f"  (`workbench episodes {dataset} rm NAME` moves one to the trash; "
          f"`workbench episodes {dataset} recover --quarantine` sets them all aside)")


def _show(args) -> int:
    from recorder.segments import canonical

    i = _store(args).show(args.episode)
    print(f"{i.name}  ({i.path})\n  source {i.source}, format {i.format_version}, {i.steps} steps, "
          f"{i.duration_s:.2f} s, cameras {', '.join(i.cameras)}, sim {i.sim}\n  task: {i.task}\n"
          f"  outcome: {i.outcome}   notes: {i.notes}\n  created {i.created}{', recovered' if i.recovered else ''}")
    for p in i.problems:
        print(f"  DAMAGED: {p}")
    for n, s in enumerate(canonical(i.segments)):
        print(f"  segment {n} {s.lane:8s}: [{s.start}, {s.end}) {s.text}")
    print(i.quality.format() if i.quality else "  no quality report")
    return 0


def _label(args) -> int:
    i = _store(args).label(args.episode, args.outcome, args.notes)
    print(f"{i.name}: {i.outcome}")
    return 0


def _annotate(args) -> int:
    from recorder.format import Segment

    store = _store(args)
    if args.remove is not None:
        i = store.remove_segment(args.episode, args.remove)
    else:
        if len(args.segment) < 3:
            raise SystemExit("annotate needs START END TEXT, or --remove N")
        try:
            seg = Segment(int(args.segment[0]), int(args.segment[1]), " ".join(args.segment[2:]), args.lane)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        i = store.add_segment(args.episode, seg)
    from recorder.segments import canonical

    print(f"{i.name}: {len(i.segments)} segments")
    for n, s in enumerate(canonical(i.segments)):
        print(f"  segment {n} {s.lane:8s}: [{s.start}, {s.end}) {s.text}")
    return 0


def _rm(args) -> int:
    store = _store(args)
    for e in args.episode:
        store.remove(e)
        print(f"{e}: moved to the trash (`restore` brings it back)")
    return 0


def _restore(args) -> int:
    store = _store(args)
    for e in args.episode:
        store.restore(e)
        print(f"{e}: restored")
    return 0


def _recover(args) -> int:
    store = _store(args)
    res = store.recover()
    if res.recovered or res.quarantined or res.live:
        print(res.format())
    damaged = store.damaged(include_deleted=True)
    if args.quarantine:
        for path, why in store.quarantine_damaged():
            print(f"quarantined {path}: {why}")
    elif damaged:
        _print_damaged(damaged, args.dataset)
    elif not (res.recovered or res.quarantined or res.live):
        print("nothing to recover: no interrupted recordings and no damaged episodes")
    return 0


def _import(args) -> int:
    from recorder.importer import import_aloha_folder

    res = import_aloha_folder(args.source, _store(args, create=True), task=args.task, fps=args.fps)
    for src, saved in res.imported:
        print(f"{src.name} -> {saved.path.name} ({saved.steps} steps)")
    for src, why in res.failed:
        print(f"FAILED {src.name}: {why}")
    return 1 if res.failed else 0


def _export(args) -> int:
    from recorder.export_lerobot import export_lerobot
    from recorder.store import StoreError, select, why_none_selected

    store = _store(args)
    outcomes, quality = args.outcome, args.quality
    if args.preset == "good":
        outcomes, quality = outcomes or ["success"], quality or ["pass"]
    everything = store.list(include_damaged=True)
    damaged = [e for e in everything if e.damaged]
    if damaged:
        print(f"skipping {len(damaged)} damaged episode(s):")
        for e in damaged:
            print(f"  DAMAGED {e.file_name}: {e.damaged}")
    usable = [e for e in everything if not e.damaged]
    chosen = select(usable, outcomes=outcomes, quality=quality)
    if not chosen:
        raise StoreError(f"{store.root}: nothing to export: "
                         + why_none_selected(usable, outcomes, quality, damaged=len(damaged)))
    res = export_lerobot([store.path(e.name) for e in chosen], args.out, overwrite=args.overwrite,
                         progress=_percent_printer(), task_source=args.task_from)
    print(f"exported {res.episodes} episodes, {res.frames} frames, {len(res.tasks)} tasks, {len(res.subtasks)} "
          f"sub-tasks ({res.codec}) to {res.root}")
    return 0


def _push(args) -> int:
    from recorder.hub import push_to_hub

    print(push_to_hub(args.export_dir, args.repo_id, private=not args.public, progress=_percent_printer()))
    return 0


def _replay(args) -> int:
    from workbench.cli_session import run_session

    path = _store(args).path(args.episode)
    r = run_session(args.rig, lambda session: session.start_replay(path)).result
    if r is None:
        return 130
    print(f"replayed {r.steps} steps{' (stopped early)' if r.stopped else ''}: follower-vs-action error median "
          f"{r.tracking_median_rad:.4f} rad, max {r.tracking_max_rad:.4f} rad; {r.clamped} commands clamped"
          + ("" if r.timing is None else f"\ntiming: {r.timing.format()}")
          + ("" if r.success is None else f"\ntask success {r.success}"))
    return 0


def _percent_printer():
    """A progress callback printing a line per 10 %: readable in a terminal and in a log."""
    last = [-1]

    def progress(text: str, fraction: float) -> None:
        if int(fraction * 10) > last[0]:
            last[0] = int(fraction * 10)
            print(f"  {fraction * 100:3.0f} %  {text}", flush=True)

    return progress
