"""RigSession safety points on real rigs (MuJoCo sim, and the virtual Dynamixel rig for a leaderless rig): each
test here was checked to fail with the line it guards removed."""
import re
import threading

import numpy as np
import pytest

from drivers.arm import ARM_JOINT_COLUMNS, SLEEP_POSE
from drivers.errors import SafetyError
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.backends import build_rig
from workbench.config import parse_rig_config, preset_text
from workbench.recording import SessionSettings
from workbench.rig import NoLeadersError
from workbench.session import ParkRefused, RigSession

JOINTS = list(ARM_JOINT_COLUMNS)


def sim_session(extra: str = "") -> RigSession:
    rig = build_rig(parse_rig_config(preset_text("sim-transfer-cube") + extra, "test"))
    rig.connect()
    return RigSession(rig)


def wait_for(session: RigSession, timeout: float = 120) -> None:
    assert session.wait(timeout), "the mode did not end"


def follower_torque(rig) -> list[bool]:
    return [bool(j.torque) for arm in rig.followers.values() for j in arm.status().joints]


def test_estop_during_startup_is_not_undone_by_the_sequence():
    """torque_off e-stop pressed while the start-up sequence reboots the grippers: the sequence's next steps
    (reboot, torque on) must not bring torque back; the mode ends held."""
    session = sim_session('\n[safety]\nestop_action = "torque_off"\n')
    seen = []

    def on_event(e):
        seen.append(e)
        if isinstance(e, ev.StepMessage) and e.text == "Rebooting follower grippers":
            session.estop("operator")  # on the control thread, right before the sequence's reboot/torque-on

    session.subscribe(on_event)
    session.start_teleop(squeeze_timeout=10)
    wait_for(session)
    stopped = [e for e in seen if isinstance(e, ev.Stopped)]
    assert stopped[-1].reason == "estop" and stopped[-1].held
    assert not any(follower_torque(session.rig)), "torque came back on after a torque_off e-stop"
    assert not any(isinstance(e, ev.StepMessage) and e.text == "Torque on all arms" for e in seen)
    session.release_estop()
    session.close(torque_off_here=True)


def test_after_an_estop_the_followers_hold_and_grippers_stay_closed():
    """No shutdown sequence after an e-stop: it would open the grippers and drop what they hold."""
    session = sim_session()
    n = []

    def press(tick):
        n.append(tick)
        if len(n) == 200:  # mid-demonstration: the right gripper holds the cube
            threading.Thread(target=session.estop, args=("operator",)).start()

    session.add_tick_listener(press)
    seen = []
    session.subscribe(seen.append)
    session.start_teleop(squeeze_timeout=10, seed=3)
    wait_for(session)
    assert [e.reason for e in seen if isinstance(e, ev.Stopped)] == ["estop"]
    assert not any(isinstance(e, ev.StepMessage) and "Opening follower grippers" in e.text for e in seen)
    last = np.concatenate([session.rig.safety.last_command(nm) for nm in session.rig.follower_names])
    # Where the grippers were at the stop: the last tick read them, and the hold a tick or two later (the press
    # runs on its own thread); an opening gripper moves in between, so the later reading counts too.
    after = np.concatenate([session.rig.safety.arms[nm].read().position for nm in session.rig.follower_names])
    grip_at_stop = np.maximum(n[-1].qpos[[6, 13]], after[[6, 13]])
    # not opened (1.0): held where they were, or at their squeeze when closed on the cube (issue 19.1)
    assert np.all(last[[6, 13]] <= grip_at_stop + 0.05), (last[[6, 13]], grip_at_stop)
    # close refuses to park while the e-stop is engaged; the operator must choose
    with pytest.raises(ParkRefused, match="torque off here"):
        session.close()
    assert session.rig.connected
    session.release_estop()
    session.close()
    assert not session.rig.connected


def test_close_parks_at_the_sleep_pose_then_torques_off():
    session = sim_session()
    session.start_teleop(squeeze_timeout=10, steps=60)
    wait_for(session)
    rig = session.rig
    poses = []
    orig = rig.disconnect

    def disconnect():  # what the arms look like the moment torque goes off
        poses.append(rig.observe()["qpos"])
        poses.append(follower_torque(rig))
        orig()

    rig.disconnect = disconnect
    session.close()
    qpos, torque = poses
    for i in (0, 7):
        np.testing.assert_allclose(qpos[i:i + 6], SLEEP_POSE, atol=0.05)
    assert all(torque), "parking happened with torque on, then disconnect turned it off"
    assert not rig.connected


def test_stop_during_a_recording_ends_the_session_once(tmp_path):
    """Teleop 'Stop' while recording: the current episode is kept, no further episode is recorded (it used to
    end every remaining episode after one tick, graded pass)."""
    session = sim_session()
    store = DatasetStore(tmp_path / "ds", create=True)
    ticks = []

    def stop_at_30(tick):
        ticks.append(tick)
        if len(ticks) == 30:
            session.stop()

    session.add_tick_listener(stop_at_30)
    seen = []
    session.subscribe(seen.append)
    session.start_recording(store, SessionSettings("transfer the cube", episodes=4, episode_s=4.0, seed=5),
                            squeeze_timeout=10)
    wait_for(session)
    saved = session.result
    assert len(saved) == 1 and 29 <= saved[0].steps <= 31
    assert len(store.list()) == 1
    assert [e.reason for e in seen if isinstance(e, ev.Stopped)] == ["operator"]
    assert sum(isinstance(e, ev.EpisodeStarted) for e in seen) == 1
    session.close(torque_off_here=True)


def test_recording_sessions_continue_the_datasets_seeds(tmp_path):
    """Two sessions without --seed on one dataset: the second continues after the first's highest seed, so it
    never records the same scene again."""
    store = DatasetStore(tmp_path / "ds", create=True)
    session = sim_session()
    for _ in range(2):
        session.start_recording(store, SessionSettings("transfer the cube", episodes=1, episode_s=1.0),
                                squeeze_timeout=10)
        wait_for(session)
        assert session.last_error is None
    paths = [store.path(e.name) for e in store.list()]
    infos, qpos = [], []
    for p in paths:
        with EpisodeReader(p) as r:
            infos.append(r.info.sim_seed)
            qpos.append(np.asarray(r.qpos))
    assert infos == [0, 1]
    assert np.abs(qpos[0] - qpos[1]).max() > 0.01, "the second session replayed the first one's scene"
    session.close(torque_off_here=True)


def test_deployment_only_rig_without_leaders():
    """Followers and cameras, no leader arms: the config and the rig accept it; teleop says it needs leaders."""
    from workbench.config import preset_text as text

    src = text("virtual")
    src = re.sub(r"\[arms\.leader_(left|right)\][^\[]*", "", src)
    cfg = parse_rig_config(src, "deploy.toml")
    assert not cfg.has_leaders and len(cfg.arms) == 2
    rig = build_rig(cfg)
    rig.connect()
    try:
        session = RigSession(rig)
        with pytest.raises(NoLeadersError, match="needs leader arms.*deployment-only"):
            session.start_teleop()
        obs = rig.observation()
        assert obs.qpos.shape == (14,) and set(obs.frames) == {c.name for c in cfg.cameras}
        session.start_source(__import__("workbench.sources", fromlist=["HoldSource"]).HoldSource(), steps=10)
        wait_for(session, 30)
        assert session.last_error is None and session.result.ticks == 10
    finally:
        rig.disconnect()
    half = re.sub(r"\[arms\.leader_left\][^\[]*", "", text("virtual"))
    with pytest.raises(Exception, match="only a right leader arm"):
        parse_rig_config(half, "half.toml")


def test_reboot_through_the_session_is_refused_while_estopped():
    session = sim_session()
    session.estop("test")
    with pytest.raises(SafetyError, match="e-stop"):
        session.rig.reboot("follower_left", "gripper")
    with pytest.raises(SafetyError, match="e-stop"):
        session.start_teleop()
    session.release_estop()
    session.close(torque_off_here=True)


@pytest.mark.parametrize("how", ["stop", "estop"])
def test_a_job_runs_on_the_control_thread_and_stop_or_estop_reach_its_hook(how):
    """start_job: a service's sequence of loop runs (the trials) as a mode of the session, which knows nothing of
    it: it runs on the control thread with the session's loop; stop() and the e-stop set its stop event and call
    its hook (a job waiting on its own event wakes), and the mode ends as every mode does."""
    from workbench.sources import HoldSource

    session = sim_session()
    woke = threading.Event()
    ran: dict = {}
    seen: list = []
    session.subscribe(seen.append)

    def job(loop, stop):
        ran["thread"] = threading.current_thread().name
        ran["loop"] = loop is session.loop
        session.emit(ev.StepMessage("job running"))
        loop.run(HoldSource(), steps=5, stop=stop)
        woke.wait(30)  # only the hook wakes this (stop() does not know the job's own event)
        return "job result"

    try:
        session.start_job(job, context="A job", on_stop=woke.set)
        assert session.mode is ev.Mode.TRIAL
        deadline = threading.Event()
        while not any(isinstance(e, ev.StepMessage) and e.text == "job running" for e in seen):
            deadline.wait(0.01)
        session.stop() if how == "stop" else session.estop("test")
        wait_for(session, 10)
        assert woke.is_set() and ran == {"thread": "control", "loop": True}
        stopped = [e for e in seen if isinstance(e, ev.Stopped)][-1]
        assert stopped.mode is ev.Mode.TRIAL
        assert (stopped.reason, stopped.held) == (("operator", False) if how == "stop" else ("estop", True))
        assert session.result == "job result"
        if how == "estop":
            session.release_estop()
    finally:
        session.close(torque_off_here=True)
