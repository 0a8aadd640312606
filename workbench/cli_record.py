"""`workbench record`: a recording session from the terminal; keys feed the session's event stream."""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.cli_keys import RawKeys
from workbench.recording import DEFAULT_EPISODE_S

PRESET_LABELS = {str(i): f"segment {i}" for i in range(1, 10)}


def register(sub) -> None:
    p = sub.add_parser("record", help="record episodes into a dataset folder",
                       description="Record --episodes episodes of --episode-s seconds. Keys: n next, "
                                   "r re-record, q stop, 1-9 preset segment labels, s + text + Enter segment, "
                                   "e / space / Esc e-stop. "
                                   "On a simulated rig the scripted demonstrator performs the task unattended "
                                   "and its phases become segment annotations.")
    p.add_argument("--rig", default="sim-transfer-cube", help="preset name or rig TOML file")
    p.add_argument("--dataset", required=True, type=Path, help="dataset folder (created if missing)")
    p.add_argument("--task", required=True, help="task prompt stored with every episode")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--episode-s", type=float, default=DEFAULT_EPISODE_S,
                   help=f"episode length in seconds (default {DEFAULT_EPISODE_S:g}, as the Record tab's)")
    p.add_argument("--reset-s", type=float, default=5.0, help="reset period between episodes (real rigs)")
    p.add_argument("--countdown-s", type=float, default=3.0, help="countdown before each episode (real rigs)")
    p.add_argument("--seed", type=int, default=None, help="simulation: seed of the first episode")
    p.add_argument("--labels", default="", help="preset labels for keys 1-9, comma separated")
    p.add_argument("--no-squeeze", action="store_true", help="skip waiting for the leader-gripper squeeze")
    p.set_defaults(func=_record)


class KeyboardEvents(RawKeys):
    """n next, r re-record, q stop, 1-9 preset segment labels, s + text + Enter a typed segment label."""

    def __init__(self, events, labels: dict[str, str]):
        super().__init__()
        self.events, self.labels = events, labels

    def key(self, ch: str) -> None:
        from workbench.recording import SessionEvent

        if ch == "n":
            self.events.put(SessionEvent.NEXT)
        elif ch == "r":
            self.events.put(SessionEvent.RERECORD)
        elif ch == "q":
            self.events.put(SessionEvent.STOP)
        elif ch in self.labels:
            self.events.put(SessionEvent.MARK, self.labels[ch])
            print(f"segment: {self.labels[ch]!r}", flush=True)
        elif ch == "s":
            self.begin_line("segment text: ")

    def line(self, text: str) -> None:
        from workbench.recording import SessionEvent

        self.events.put(SessionEvent.MARK, text)
        print(f"segment: {text!r}", flush=True)


def _record(args) -> int:
    from recorder.store import DatasetStore
    from workbench.cli_session import run_session
    from workbench.recording import EventStream, SessionSettings

    store = DatasetStore(args.dataset)
    rec = store.recover()
    if rec.recovered or rec.quarantined:
        print(rec.format())
    labels = dict(PRESET_LABELS)
    for i, text in enumerate([x.strip() for x in args.labels.split(",") if x.strip()][:9], start=1):
        labels[str(i)] = text
    events = EventStream()
    keys = KeyboardEvents(events, labels) if sys.stdin.isatty() else None
    settings = SessionSettings(args.task, args.episodes, args.episode_s, args.reset_s, args.countdown_s, args.seed)

    def start(session) -> None:
        session.start_recording(store, settings, events, wait_for_squeeze=not args.no_squeeze)
        if keys:
            keys.with_estop(session).start()

    try:
        session = run_session(args.rig, start)
    finally:
        if keys:
            keys.stop()
    saved = session.result or []
    ok = sum(s.quality.status != "fail" for s in saved)
    print(f"recorded {len(saved)} episodes into {args.dataset} ({ok} without a quality failure)")
    return 0
