"""Does the GUI cost the control loop anything? Teleop on the `virtual` rig (real-time clock, real dynamixel-sdk
against emulated servos, four synthetic 640x480 cameras at 50 fps), headless vs with the app showing four camera
previews and the live joint plots. Prints the loop period p50/p99/max of each run and the difference.

    Xvfb :99 -screen 0 1600x1000x24 &  DISPLAY=:99 QT_QPA_PLATFORM=xcb python bench/bench_gui_teleop.py
    python bench/bench_gui_teleop.py --ticks 1500 --rounds 2     # offscreen when there is no display

Runs alternate (headless, GUI, headless, GUI, ...) so slow drifts of a shared machine hit both alike.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FOUR_CAMERAS = '\n[cameras.cam_low]\nkind = "synthetic"\nfps = 50\n'


def rig_file(tmp: Path) -> str:
    from workbench.config import preset_text

    p = tmp / "virtual_4cam.toml"
    p.write_text(preset_text("virtual").replace('name = "virtual"', 'name = "virtual-4cam"') + FOUR_CAMERAS)
    return str(p)


def headless(path: str, ticks: int):
    from workbench.config import load_rig_config
    from workbench.backends import build_rig
    from workbench.session import RigSession

    rig = build_rig(load_rig_config(path))
    rig.connect()
    with RigSession(rig) as session:
        session.start_teleop(wait_for_squeeze=False, steps=ticks)
        session.wait()
        if session.last_error is not None:
            raise session.last_error
        return session.result, {}


class GcPauses:
    """Longest garbage-collector pauses (they hold the GIL, so the control loop waits them out)."""

    def __init__(self):
        import gc

        self.pauses: list[tuple[float, int]] = []
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append(((time.perf_counter() - self._t0) * 1e3, info["generation"]))

    def worst(self) -> str:
        p = sorted(self.pauses, reverse=True)[:3]
        return ", ".join(f"{ms:.1f} ms (gen {g})" for ms, g in p) or "none"


GC = GcPauses()


def gui(path: str, ticks: int, tmp: Path, screenshot: str | None = None, without: tuple[str, ...] = ()):
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from ui.app import create_window, ensure_app

    app = ensure_app()
    settings = QSettings(str(tmp / "bench.ini"), QSettings.Format.IniFormat)
    win = create_window(path, settings=settings, dataset_dir=str(tmp / "ds"))
    win.resize(1280, 800)
    win.show()
    # isolation runs: take one consumer of frames/ticks away to see what it costs the loop
    if "plots" in without:
        win.live.plots.push = lambda tick: None
    if "previews" in without:
        win.live.cameras.feed = lambda frames: None

    def wait(cond, timeout):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.005)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"GUI bench: timed out after {timeout} s ({win.banner.current})")

    win.rig_panel.connect_rig()
    wait(lambda: win.ctl.connected, 60)
    win.show_tab(win.teleop_panel)
    win.teleop_panel.squeeze.setChecked(False)
    win.teleop_panel.start()
    wait(lambda: win.ctl.state == "running", 60)
    wait(lambda: win.ctl.loop is not None and win.ctl.loop.timing.ticks >= ticks, ticks / 50 * 3 + 30)
    tiles = {n: t.updates for n, t in win.live.cameras.tiles.items()}
    extra = {"preview_updates": tiles, "plot_redraws": win.live.plots.redraws, "gui_polls": win.polls,
             "gc_worst": GC.worst(), "loop_priority": win.ctl.loop.priority}
    GC.pauses.clear()
    if screenshot:
        win.grab().save(screenshot)
    win.ctl.stop_teleop()
    wait(lambda: not win.ctl.teleop_running, 30)
    s = win.ctl.last_summary  # the run's timing, from the session's Stopped event
    win.close()
    QApplication.processEvents()
    return s, extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=1500, help="control ticks per run (default 1500 = 30 s)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--screenshot", default=None, help="save the GUI window at the end of the last GUI run")
    ap.add_argument("--without", action="append", default=[], choices=["plots", "previews"],
                    help="isolation: run the GUI without live plots or camera previews")
    args = ap.parse_args()
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
    path = rig_file(tmp)
    rows = {"headless": [], "gui": []}
    for r in range(args.rounds):
        for mode in ("headless", "gui"):
            if mode == "headless":
                s, extra = headless(path, args.ticks)
                extra = {"gc_worst": GC.worst()}
                GC.pauses.clear()
            else:
                s, extra = gui(path, args.ticks, tmp, args.screenshot if r == args.rounds - 1 else None,
                               tuple(args.without))
            rows[mode].append(s)
            print(f"round {r + 1} {mode:8s}: {s.format()}" + (f"\n    {extra}" if extra else ""), flush=True)
    import statistics as st

    p99 = {m: st.median(x.period_p99_ms for x in v) for m, v in rows.items()}
    p50 = {m: st.median(x.period_p50_ms for x in v) for m, v in rows.items()}
    print(f"\nplatform {os.environ.get('QT_QPA_PLATFORM') or 'xcb'} · {args.ticks} ticks/run · {args.rounds} rounds · "
          f"4 cameras 640x480@50")
    print(f"period p50: headless {p50['headless']:.3f} ms, GUI {p50['gui']:.3f} ms")
    print(f"period p99: headless {p99['headless']:.3f} ms, GUI {p99['gui']:.3f} ms, "
          f"GUI - headless = {p99['gui'] - p99['headless']:+.3f} ms (budget 1 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
