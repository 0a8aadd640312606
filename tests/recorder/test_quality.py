"""Quality checks grade what matters on each kind of rig: a too-short episode fails; in simulation a still scene
is not a frozen camera and wall-clock lateness shows without being graded (n/a: sim data is exact); on hardware the
wall clock is graded; a demonstration's tracking is leader vs follower, a trial's follower vs the command sent;
servo faults carried by ticks fail the episode."""
from __future__ import annotations

import numpy as np

from recorder.quality import CameraTrack, QualityInput, QualityThresholds, compute_quality
from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, tick


def _input(n: int, *, sim: bool = False, still_after: int | None = None, t_wall=None) -> QualityInput:
    t = 100.0 + np.arange(n) * 0.02
    crc = np.arange(n, dtype=np.uint32)
    if still_after is not None:
        crc[still_after:] = crc[still_after]  # the scene stops changing: identical frames
    cam = CameraTrack(t - 0.004, np.arange(n), crc)
    q = np.zeros((n, 14), np.float32)
    return QualityInput(t=t, qpos=q, action=q, cameras={"cam_high": cam}, hw_errors=[], control_hz=50.0,
                        t_wall=t_wall, sim=sim)


def test_a_one_step_episode_fails_the_length_check():
    th = QualityThresholds()
    r = compute_quality(_input(1), th)
    assert r.check("length").status == "fail" and r.status == "fail"
    assert compute_quality(_input(20), th).check("length").status == "fail"  # 0.4 s < 0.5 s
    assert compute_quality(_input(40), th).check("length").status == "warn"  # 0.8 s < 1 s
    assert compute_quality(_input(100), th).check("length").status == "pass"
    strict = QualityThresholds.from_mapping({"min_length_s_fail": 3.0, "min_length_s_warn": 5.0})  # rig [quality]
    assert compute_quality(_input(100), strict).check("length").status == "fail"


def test_simulation_still_scene_is_not_a_frozen_camera_but_hardware_is():
    sim = compute_quality(_input(400, sim=True, still_after=200), QualityThresholds())
    assert sim.check("frozen/cam_high").status == "n/a" and sim.check("frozen/cam_high").value > 2.0
    assert sim.status == "pass"
    hw = compute_quality(_input(400, still_after=200), QualityThresholds())
    assert hw.check("frozen/cam_high").status == "fail"


def test_jitter_comes_from_the_wall_clock():
    n = 200
    wall = 1.7e9 + np.arange(n) * 0.02
    for k in range(10, n, 20):  # every 20th tick 31 ms late, as t_wall measured it while sim time stayed exact
        wall[k:] += 0.031
    sim = compute_quality(_input(n, sim=True, t_wall=wall), QualityThresholds())
    j = sim.check("period_jitter_p99")
    assert j.value > 10 and "wall clock" in j.detail and j.status == "n/a"  # visible, but sim data is exact
    assert sim.check("control_rate").status == "n/a" and sim.status == "pass"  # so a sim episode can pass
    hw = compute_quality(_input(n, t_wall=wall), QualityThresholds())
    assert hw.check("period_jitter_p99").status == "fail"
    no_wall = compute_quality(_input(n, sim=True, t_wall=np.full(n, np.nan)), QualityThresholds())
    assert no_wall.check("period_jitter_p99").value < 1e-6  # imported files: the rig clock is all there is


def test_servo_errors_carried_by_ticks_fail_the_episode(tmp_path):
    """The control loop fills Tick.hw_errors (list[str]); the writer stores them and the check reads them."""
    w = DatasetStore(tmp_path).new_episode(CAMS, task="t", control_hz=50)
    for i in range(60):
        w.append(tick(i, hw_errors=["follower_left/gripper: overload"] if i == 30 else []))
    saved = w.stop()
    c = saved.quality.check("servo_hw_errors")
    assert c.status == "fail" and c.value == 1 and "overload" in c.detail


def test_a_trial_is_graded_on_follower_vs_command_not_on_the_policys_request():
    """A policy asking far ahead (its requests 0.5 rad from the arms, the safety layer sending capped commands the
    followers track): a trial passes tracking; the same data as a demonstration fails it (leader vs follower). A
    trial whose arm is blocked (follower 0.5 rad behind its command) fails."""
    n = 200
    base = _input(n, sim=True)
    request = base.qpos + 0.5
    command = base.qpos + 0.01
    trial = QualityInput(**{**base.__dict__, "action": request, "trial": True, "command": command})
    c = compute_quality(trial, QualityThresholds()).check("tracking_error_p99")
    assert c.status == "pass" and c.value < 0.02 and "command sent" in c.detail
    demo = QualityInput(**{**base.__dict__, "action": request})
    assert compute_quality(demo, QualityThresholds()).check("tracking_error_p99").status == "fail"
    blocked = QualityInput(**{**base.__dict__, "action": request, "trial": True, "command": base.qpos + 0.5})
    assert compute_quality(blocked, QualityThresholds()).check("tracking_error_p99").status == "fail"


def test_a_recorded_trial_episode_is_graded_as_a_trial(tmp_path):
    """Through the writer: the trial marker (set at the start, as the trial runner does) makes the finished
    episode's tracking follower vs command."""
    from recorder.format import TRIAL_ATTR

    w = DatasetStore(tmp_path).new_episode(CAMS, task="t", control_hz=50)
    w.set_extra_attrs({TRIAL_ATTR: '{"ended_by": "interrupted"}'})
    for i in range(60):
        w.append(tick(i))
    c = w.stop().quality.check("tracking_error_p99")
    assert "command sent" in c.detail, c
