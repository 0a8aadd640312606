"""Leader-follower teleoperation at the rig's control rate, with ALOHA's start-up and shutdown ceremonies.

Each tick: read leaders and followers, send the leaders' pose to the followers through the safety layer,
take the latest camera frames, hand a `Tick` to the listeners (recorder, GUI), then wait for the next deadline.
Listeners run in the control thread and must be cheap; heavy work (encoding, plotting) happens elsewhere.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from drivers.arm import ARM_DOF, SIDES, SLEEP_POSE, START_POSE
from drivers.cameras.base import Frame
from drivers.errors import CameraError, DriverError, SafetyError, ServoHardwareError
from workbench.rig import Rig
from workbench.safety import SafetyLayer
from workbench.timing import LoopTiming, Pacer, TimingSummary, elevated_priority

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class Tick:
    index: int
    t: float  # rig clock at the start of the tick (monotonic on hardware, sim time in simulation)
    t_wall: float
    qpos: np.ndarray  # (14,) followers, ALOHA space [left 6 joints, left gripper, right 6, right gripper]
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray  # (14,) leader reading: the recorded action (ALOHA convention)
    command: np.ndarray  # (14,) what the safety layer sent to the followers
    frames: dict[str, Frame]
    phase: str | None = None  # scripted demonstrator phase (simulation)
    hw_errors: list[str] = field(default_factory=list)
    period: float = float("nan")


Listener = Callable[[Tick], None]


class TeleopStopped(RuntimeError):
    """Teleoperation ended because of an error; the followers were brought to a safe stop first."""


class TeleopLoop:
    def __init__(self, rig: Rig, safety: SafetyLayer | None = None):
        self.rig = rig
        self.safety = safety or rig.safety
        self.listeners: list[Listener] = []
        self.timing = LoopTiming(rig.config.control_hz)
        self._stop = threading.Event()
        self.tick_index = 0
        self.state = "idle"  # idle | starting | waiting_for_squeeze | running | stopping
        self.priority = "normal"  # the CPU priority the last run got (see workbench.timing.elevated_priority)

    # -- control ---------------------------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        self.listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self.listeners:
            self.listeners.remove(fn)

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # -- ceremonies ------------------------------------------------------------------------------------
    def startup(self, progress: Progress = log.info, wait_for_squeeze: bool = True, squeeze_timeout: float | None = None) -> None:
        """ALOHA start-up: reboot follower grippers, torque on, move to the start pose, wait for the squeeze."""
        rig, safety, hz = self.rig, self.safety, self.rig.config.control_hz
        self._stop.clear()
        self.state = "starting"
        progress("Rebooting follower grippers")
        for arm in rig.followers.values():
            arm.reboot("gripper")
        progress("Torque on all arms")
        for arm in rig.all_arms().values():
            arm.set_torque(True, True)
        progress("Moving all arms to the start pose")
        targets = {}
        for arm in rig.all_arms().values():
            present = arm.read().position
            targets[arm.name] = np.concatenate([START_POSE, present[6:7]])
        safety.move_to(targets, 1.5, rig.clock, hz, self._stop.is_set)
        progress("Moving grippers (leaders half open, followers closed)")
        grip = {}
        for arm in rig.all_arms().values():
            grip[arm.name] = np.concatenate([START_POSE, [0.5 if arm.role == "leader" else 0.0]])
        safety.move_to(grip, 0.5, rig.clock, hz, self._stop.is_set)
        for arm in rig.leaders.values():
            arm.set_torque(True, False)  # grippers free so the operator can squeeze them
        if wait_for_squeeze:
            self.state = "waiting_for_squeeze"
            progress("Squeeze both leader grippers to start")
            self._wait_for_squeeze(squeeze_timeout)
        for arm in rig.leaders.values():
            arm.set_torque(False, False)
        progress("Teleoperating")

    def _wait_for_squeeze(self, timeout: float | None) -> None:
        threshold = self.rig.config.gripper.start_threshold_normalized
        pacer = Pacer(self.rig.clock, self.rig.config.control_hz)
        t0 = pacer.start()
        while not self._stop.is_set():
            with self.safety.io_lock:
                grips = [arm.read().position[6] for arm in self.rig.leaders.values()]
            if all(g < threshold for g in grips):
                return
            if timeout is not None and self.rig.clock.now() - t0 > timeout:
                raise TeleopStopped(f"nobody squeezed both leader grippers within {timeout:.0f} s")
            pacer.wait()

    def shutdown(self, progress: Progress = log.info, sleep_pose: bool = False) -> None:
        """ALOHA shutdown: leaders hold their pose, follower grippers open, optionally followers to sleep."""
        self.state = "stopping"
        rig = self.rig
        try:
            if self.safety.estopped:
                return
            progress("Leaders hold their pose")
            for arm in rig.leaders.values():
                arm.set_torque(True, True)
            targets = {}
            for arm in rig.followers.values():
                pose = SLEEP_POSE if sleep_pose else arm.read().position[:6]
                targets[arm.name] = np.concatenate([pose, [1.0]])
            progress("Opening follower grippers" + (" and moving to the sleep pose" if sleep_pose else ""))
            self.safety.move_to(targets, 2.0 if sleep_pose else 0.5, rig.clock, rig.config.control_hz)
        finally:
            self.state = "idle"

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, steps: int | None = None) -> TimingSummary:
        """Teleoperate until `steps` ticks ran or `request_stop()`; on any error the followers hold first."""
        # Everything alive now (the app, the rig, imported modules) leaves the collector's view: a full collection
        # holds the GIL for as long as it walks the heap (23 ms measured with the GUI up), a whole tick lost.
        gc.collect()
        gc.freeze()
        # a simulated clock never sleeps: real-time priority there would only starve the GUI
        realtime = self.rig.clock.realtime
        try:
            with elevated_priority(self.rig.config.rt_priority if realtime else 0, -10 if realtime else 0) as got:
                self.priority = got
                return self._run(steps)
        finally:
            gc.unfreeze()  # what the run left behind is collectable again (between runs, off the loop's clock)

    def _run(self, steps: int | None) -> TimingSummary:
        self._stop.clear()
        self.state = "running"
        rig, safety = self.rig, self.safety
        followers = [rig.followers[s] for s in SIDES]
        leaders = [rig.leaders[s] for s in SIDES]
        names = [a.name for a in followers]
        safety.sync(names)
        pacer = Pacer(rig.clock, rig.config.control_hz)
        pacer.start()
        n = 0
        try:
            while not self._stop.is_set() and (steps is None or n < steps):
                if safety.estopped:
                    break
                try:
                    self._tick(leaders, followers, names)
                except SafetyError:
                    if safety.estopped:  # the e-stop landed between reading and commanding: a clean stop
                        break
                    raise
                n += 1
                if steps is not None and n >= steps:
                    break
                pacer.wait()
        except ServoHardwareError as exc:
            self._safe_stop(exc)
            raise TeleopStopped(str(exc)) from exc
        except (DriverError, CameraError) as exc:
            self._safe_stop(exc)
            raise TeleopStopped(f"teleoperation stopped safely: {exc}") from exc
        except BaseException as exc:  # Ctrl-C, a listener bug: hold the followers, then let it propagate
            self._safe_stop(exc)
            raise
        finally:
            self.timing.skipped = pacer.skipped
            self.state = "idle"
        return self.timing.summary()

    def _safe_stop(self, exc: BaseException) -> None:
        log.error("teleop stopping: %s", exc)
        try:
            self.safety.hold()
        except Exception as hold_exc:  # noqa: BLE001 - last resort, never mask the original error
            log.error("could not hold the followers: %s", hold_exc)

    def _tick(self, leaders, followers, names) -> Tick:
        rig, safety = self.rig, self.safety
        clock_t = rig.clock.now()
        c0 = time.perf_counter()
        with safety.io_lock:
            b0 = time.perf_counter()
            lead = [a.read() for a in leaders]
            fol = [a.read() for a in followers]
            b1 = time.perf_counter()
            action = np.concatenate([s.position for s in lead])
            sent = [safety.command(name, action[i * ARM_DOF:(i + 1) * ARM_DOF]) for i, name in enumerate(names)]
            bus_write = safety.take_io_time()
        f0 = time.perf_counter()
        frames = {name: cam.latest() for name, cam in rig.cameras.items()}
        f1 = time.perf_counter()
        tick = Tick(
            index=self.tick_index,
            t=clock_t,
            t_wall=time.time(),
            qpos=np.concatenate([s.position for s in fol]),
            qvel=np.concatenate([s.velocity for s in fol]),
            effort=np.concatenate([s.effort for s in fol]),
            action=action,
            command=np.concatenate(sent),
            frames=frames,
            phase=rig.phase(),
        )
        tick.period = self.timing.record(clock_t, 0.0, 0.0)  # work filled in below
        for fn in self.listeners:
            fn(tick)
        total = time.perf_counter() - c0
        io = (b1 - b0) + bus_write
        cams = f1 - f0
        self.timing.work[-1] = total - io - cams
        self.timing.io[-1] = io
        self.timing.camera[-1] = cams
        self.tick_index += 1
        return tick
