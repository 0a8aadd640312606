"""What every arm-moving CLI command shares: build and connect the rig, one `RigSession`, its events printed as
lines, Ctrl-C as a clean stop, and a close that parks the followers before torque off. A second Ctrl-C (while
stopping or parking) means "stop now": the motion stops and the arms go limp where they stand, and it says so;
nothing can interrupt that torque-off. The e-stop keys of the CLI sessions are `workbench.cli_keys.RawKeys.with_estop`.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
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
    interrupted = second = False
    try:
        start(session)
        while not session.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping (followers held); Ctrl-C again: torque off where they stand", flush=True)
        session.stop()
        try:
            session.wait(15.0)
        except KeyboardInterrupt:
            second = True
    finally:
        if second:
            _torque_off_now(session, "stopping")
        else:
            _close(session, park=park)
    if session.last_error is not None and not interrupted:
        raise session.last_error
    return session


def _close(session: RigSession, park: bool) -> None:
    """Close the session (parking first unless `park` is False or the e-stop holds); a Ctrl-C meanwhile aborts
    the park: torque off where the arms stand."""
    try:
        session.close(torque_off_here=not park or session.estopped)
    except KeyboardInterrupt:
        _torque_off_now(session, "parking")


def _torque_off_now(session: RigSession, during: str) -> None:
    print(f"\nsecond Ctrl-C: {during} aborted; torque off where the arms stand (support them)", file=sys.stderr,
          flush=True)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # nothing interrupts a torque-off
    try:
        session.close(torque_off_here=True)
    except Exception as exc:  # noqa: BLE001 - the arms must still go limp
        logging.getLogger(__name__).error("close failed (%s); disconnecting the rig", exc)
        session.rig.disconnect()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    print("torque off, rig disconnected", file=sys.stderr, flush=True)
