"""What every arm-moving CLI command shares: build and connect the rig, one `RigSession`, its events printed as
lines, Ctrl-C as a clean stop, and a close that parks the followers before torque off."""
from __future__ import annotations

import sys
from typing import Callable

from workbench import events as ev
from workbench.session import RigSession, describe_stop


def print_event(event: ev.RigEvent) -> None:
    if isinstance(event, ev.StepMessage):
        print(f"  {event.text}", flush=True)
    elif isinstance(event, ev.Countdown):
        print(f"  {event.what} {event.seconds_left:.0f} s (n = skip)", flush=True)
    elif isinstance(event, ev.EpisodeStarted):
        seed = "" if event.seed is None else f", seed {event.seed}"
        print(f"recording {event.name} ({event.number}/{event.total}{seed}): n next, r re-record, q stop, "
              f"1-9 segment label, s segment text", flush=True)
    elif isinstance(event, ev.EpisodeSaved):
        s = event.episode
        print(f"saved {s.path.name}: {s.steps} steps, {s.duration_s:.1f} s, outcome {event.outcome}, saved "
              f"{s.save_latency_s:.2f} s after stop\n{s.quality.format()}", flush=True)
    elif isinstance(event, ev.EpisodeDiscarded):
        print(f"{event.name} discarded" + ("; recording it again" if event.rerecord else ""), flush=True)
    elif isinstance(event, ev.SessionError):
        print(f"error ({event.context}): {event.error}", file=sys.stderr, flush=True)
    elif isinstance(event, ev.EstopChanged) and event.engaged:
        print(f"E-STOP: {event.reason}", file=sys.stderr, flush=True)
    elif isinstance(event, ev.Stopped):
        print(describe_stop(event), flush=True)


def run_session(rig_ref: str, start: Callable[[RigSession], None], *, park: bool = True,
                on_event: Callable[[ev.RigEvent], None] = print_event) -> RigSession:
    """Connect `rig_ref`, `start(session)` a mode, wait for it (Ctrl-C stops it cleanly), then close: followers
    to the sleep pose and torque off (`park=False`: torque off where they stand). Re-raises the mode's error."""
    from workbench.config import load_rig_config
    from workbench.backends import build_rig

    rig = build_rig(load_rig_config(rig_ref))
    rig.connect(progress=lambda m: None)
    session = RigSession(rig)
    session.subscribe(on_event)
    interrupted = False
    try:
        start(session)
        while not session.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping (followers held)", flush=True)
        session.stop()
        session.wait(15.0)
    finally:
        session.close(torque_off_here=not park or session.estopped)
    if session.last_error is not None and not interrupted:
        raise session.last_error
    return session
