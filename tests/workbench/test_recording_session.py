"""A recording session on the simulated rig, end to end: teleop with the scripted demonstrator, segments from
its phases plus an operator mark, a re-record, quality reports, the dataset store, then replay of an episode."""
import numpy as np
import pytest

from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from workbench.recording import EventStream, RecordingSession, SessionEvent, SessionSettings
from workbench.replay import ReplayError, replay_episode
from workbench.teleop import TeleopLoop

PHASES = ["approach the cube", "grasp the cube", "hand over", "release"]


@pytest.fixture(scope="module")
def recorded(sim_rig, tmp_path_factory):
    store = DatasetStore(tmp_path_factory.mktemp("ds"), create=True)
    events = EventStream()
    loop = TeleopLoop(sim_rig)
    loop.startup(progress=lambda m: None, squeeze_timeout=10)
    session = RecordingSession(sim_rig, store, SessionSettings(task="transfer the cube", episodes=2, episode_s=8.0,
                                                               seed=11), events, progress=lambda m: None)
    state = {"rerecorded": False}

    def operator(tick):  # the operator's keys, as the CLI keyboard or the GUI would send them
        if tick.index == loop_start + 150:
            events.put(SessionEvent.MARK, "grasp the cube corner")
        if not state["rerecorded"] and tick.index == loop_start + 20:
            state["rerecorded"] = True
            events.put(SessionEvent.RERECORD)

    loop_start = loop.tick_index
    loop.add_listener(operator)
    saved = session.run(loop)
    return store, saved


def test_two_episodes_saved_after_a_rerecord(recorded):
    store, saved = recorded
    assert len(saved) == 2
    names = [e.name for e in store.list()]
    assert names == [s.name for s in saved]  # the discarded attempt left no episode behind
    for s in saved:
        assert s.steps == 400
        assert s.quality.status in ("pass", "warn")


def test_segments_from_phases_and_operator_mark(recorded):
    store, saved = recorded
    info = store.show(saved[0].name)
    texts = [seg.text for seg in info.segments]
    assert [t for t in texts if t in PHASES] == PHASES
    assert "start-up" not in texts and "done" not in texts
    assert info.task == "transfer the cube" and info.sim and info.sim_seed is not None
    assert info.outcome == "success"  # the sim's success signal labels sim episodes


def test_episode_is_act_readable(recorded):
    import cv2
    import h5py

    _, saved = recorded
    with h5py.File(saved[0].path, "r") as f:
        qpos, action = f["/observations/qpos"][()], f["/action"][()]
        img = cv2.imdecode(f["/observations/images/cam_high"][0], cv2.IMREAD_COLOR)
    assert qpos.shape == action.shape == (400, 14)
    assert img.shape == (240, 320, 3)


def test_replay_reproduces_the_episode_in_simulation(recorded, sim_rig):
    _, saved = recorded
    result = replay_episode(sim_rig, saved[1].path, progress=lambda m: None)
    assert result.steps == 400 and not result.stopped
    assert result.success is True
    assert result.tracking_median_rad < 0.05


def test_replay_refuses_an_episode_that_does_not_fit(recorded, sim_rig, tmp_path):
    import shutil

    import h5py

    _, saved = recorded

    bad = tmp_path / "bad.hdf5"
    shutil.copy(saved[0].path, bad)
    with h5py.File(bad, "r+") as f:  # a 6-DoF single-arm episode cannot drive an ALOHA
        del f["action"]
        f["action"] = np.zeros((400, 12), np.float32)
    with pytest.raises(ReplayError, match="cannot drive"):
        replay_episode(sim_rig, bad, progress=lambda m: None)
