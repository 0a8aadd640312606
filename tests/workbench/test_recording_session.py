"""A recording session on the simulated rig, end to end: teleop with the scripted demonstrator, segments from
its phases plus an operator mark, a re-record, quality reports, the dataset store, then replay of an episode."""
import numpy as np
import pytest

from drivers.arm import ARM_JOINT_COLUMNS
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.recording import EventStream, SessionEvent, SessionSettings, episode_rig_info
from workbench.replay import ReplayError
from workbench.session import RigSession

PHASES = ["approach the cube", "grasp the cube", "hand over", "release"]


def run_replay(rig, path):
    session = RigSession(rig)
    session.start_replay(path)
    assert session.wait(120)
    if session.last_error is not None:
        raise session.last_error
    return session.result


@pytest.fixture(scope="module")
def recorded(sim_rig, tmp_path_factory):
    store = DatasetStore(tmp_path_factory.mktemp("ds"), create=True)
    events = EventStream()
    session = RigSession(sim_rig)
    seen: list = []
    session.subscribe(seen.append)
    state = {"rerecorded": False, "ticks": 0}

    def operator(tick):  # the operator's keys, as the CLI keyboard or the GUI would send them
        state["ticks"] += 1
        if state["ticks"] == 150:
            events.put(SessionEvent.MARK, "grasp the cube corner")
        if not state["rerecorded"] and state["ticks"] == 20:
            state["rerecorded"] = True
            state["ticks"] = 0
            events.put(SessionEvent.RERECORD)

    session.add_tick_listener(operator)
    from workbench import recording

    aligned: list = []
    real_align = recording.align_to_leaders

    def spy(rig, stop, say):  # the real gap check, counted
        aligned.append(len([e for e in seen if isinstance(e, ev.EpisodeStarted)]))
        return real_align(rig, stop, say)

    mp = pytest.MonkeyPatch()
    mp.setattr(recording, "align_to_leaders", spy)
    session.start_recording(store, SessionSettings(task="transfer the cube", episodes=2, episode_s=8.0, seed=11),
                            events, squeeze_timeout=10)
    try:
        assert session.wait(300)
    finally:
        mp.undo()
    assert session.last_error is None, session.last_error
    seen.append(("aligned before episodes", aligned))
    return store, session.result, seen


def test_session_events_are_typed_and_in_order(recorded):
    _, saved, seen = recorded
    kinds = [type(e) for e in seen]
    assert kinds[0] is ev.ModeChanged and all(k.__module__ == "workbench.events" for k in kinds[:-1]) and seen[0].mode is ev.Mode.RECORDING
    started = [e for e in seen if isinstance(e, ev.EpisodeStarted)]
    assert [e.number for e in started] == [1, 1, 2]  # episode 1 re-recorded once
    assert [e.seed for e in started] == [11, 11, 12]
    assert [e.episode.path for e in seen if isinstance(e, ev.EpisodeSaved)] == [s.path for s in saved]
    assert [e.rerecord for e in seen if isinstance(e, ev.EpisodeDiscarded)] == [True]
    stopped = [e for e in seen if isinstance(e, ev.Stopped)]
    assert len(stopped) == 1 and stopped[0].reason == "done" and not stopped[0].held
    # the leader-follower gap is checked before every episode (re-records too), not only the first
    assert seen[-1] == ("aligned before episodes", [0, 1, 2])


def test_two_episodes_saved_after_a_rerecord(recorded):
    store, saved, _ = recorded
    assert len(saved) == 2
    names = [e.name for e in store.list()]
    assert names == [s.name for s in saved]  # the discarded attempt left no episode behind
    for s in saved:
        assert s.steps == 400
        assert s.quality.status in ("pass", "warn")


def test_segments_from_phases_and_operator_mark(recorded):
    store, saved, _ = recorded
    info = store.show(saved[0].name)
    texts = [seg.text for seg in info.segments]
    assert [t for t in texts if t in PHASES] == PHASES
    assert "start-up" not in texts and "done" not in texts
    assert info.task == "transfer the cube" and info.sim and info.sim_seed is not None
    assert info.outcome == "success"  # the sim's success signal labels sim episodes


def test_episodes_record_the_rig_facts_training_needs(recorded, sim_rig):
    """Cameras, joint layout, control rate and gripper constants go into every episode (recorder.rig_info), so
    training never has to read the rig file (finetune does not know workbench.config)."""
    from drivers.arm import BIMANUAL_JOINT_NAMES
    from drivers.gripper import GRIPPER_PRESETS
    from recorder.rig_info import gripper_dict

    store, saved, _ = recorded
    rig = store.show(saved[0].name).rig_info
    assert rig is not None and rig == episode_rig_info(sim_rig.config, list(sim_rig.cameras))
    assert (rig.name, rig.backend, rig.control_hz, rig.gripper_set) == ("sim-transfer-cube", "sim", 50.0, "aloha1")
    assert rig.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    assert rig.joint_names == BIMANUAL_JOINT_NAMES and rig.gripper == gripper_dict(GRIPPER_PRESETS["aloha1"])


def test_episode_rig_info_of_a_real_rig_file():
    from workbench.config import parse_rig_config, preset_text

    cfg = parse_rig_config(preset_text("aloha").replace('gripper = "aloha1"', 'gripper = "aloha2"'), "test")
    rig = episode_rig_info(cfg)
    assert (rig.name, rig.backend, rig.gripper_set) == (cfg.name, "dynamixel", "aloha2")
    assert rig.cameras == tuple(c.name for c in cfg.cameras) and rig.gripper["leader_joint_open"] == 0.8298


def test_episode_is_act_readable(recorded):
    import cv2
    import h5py

    _, saved, _ = recorded
    with h5py.File(saved[0].path, "r") as f:
        qpos, action = f["/observations/qpos"][()], f["/action"][()]
        img = cv2.imdecode(f["/observations/images/cam_high"][0], cv2.IMREAD_COLOR)
    assert qpos.shape == action.shape == (400, 14)
    assert img.shape == (240, 320, 3)


def test_replay_reproduces_the_episode_in_simulation(recorded, sim_rig):
    _, saved, _ = recorded
    result = run_replay(sim_rig, saved[1].path)
    assert result.steps == 400 and not result.stopped
    assert result.success is True
    assert result.tracking_median_rad < 0.05


def test_replay_refuses_an_episode_that_does_not_fit(recorded, sim_rig, tmp_path):
    import shutil

    import h5py

    _, saved, _ = recorded

    bad = tmp_path / "bad.hdf5"
    shutil.copy(saved[0].path, bad)
    with h5py.File(bad, "r+") as f:  # a 6-DoF single-arm episode cannot drive an ALOHA
        del f["action"]
        f["action"] = np.zeros((400, 12), np.float32)
    with pytest.raises(ReplayError, match="cannot drive"):
        run_replay(sim_rig, bad)


def test_replay_can_be_recorded_like_teleop(recorded, sim_rig, tmp_path):
    """Replay runs through the same loop as teleop, so it can be recorded the same way: same steps, same scene."""
    _, saved, _ = recorded
    out = DatasetStore(tmp_path / "replays", create=True)
    session = RigSession(sim_rig)
    session.start_replay(saved[1].path, record_to=out)
    assert session.wait(120) and session.last_error is None, session.last_error
    r = session.result
    assert r.timing is not None and r.timing.ticks == 400
    [e] = out.list()
    with EpisodeReader(out.path(e.name)) as rep, EpisodeReader(saved[1].path) as orig:
        assert rep.info.sim_seed == orig.info.sim_seed and rep.info.task == orig.info.task
        np.testing.assert_allclose(np.asarray(rep.action), np.asarray(orig.action), atol=1e-6)
        joints = list(ARM_JOINT_COLUMNS)  # arm joints once the approach transient is over
        assert np.abs(np.asarray(rep.qpos)[10:, joints] - np.asarray(orig.qpos)[10:, joints]).max() < 0.05
    assert e.outcome == "success"


def test_two_sessions_on_one_dataset_never_take_the_same_seed(tmp_path):
    """Two `workbench record` sessions started on one dataset before either saved anything: each claims its
    episodes' seeds, so their scenes differ (both used to start at the dataset's next seed: identical episodes)."""
    from types import SimpleNamespace

    from workbench import recording
    from workbench.recording import RecordingSession

    store = DatasetStore(tmp_path / "ds", create=True)
    sim_rig = SimpleNamespace(sim=object())  # what a session asks of its rig before it runs: simulated or not
    settings = SessionSettings(task="transfer the cube", episodes=3, episode_s=1.0)
    a, b = RecordingSession(sim_rig, store, settings), RecordingSession(sim_rig, store, settings)
    assert a.base_seed != b.base_seed  # the first episode's scene (the start-up ceremony runs in it)
    seeds_a = [a._seed(k) for k in range(3)]
    seeds_b = [b._seed(k) for k in range(3)]
    assert not set(seeds_a) & set(seeds_b), (seeds_a, seeds_b)
    assert a._seed(1) == seeds_a[1]  # a re-recorded episode keeps its scene
    assert recording.claimed_sim_seeds(store) == sorted(seeds_a + seeds_b)
    assert recording.next_sim_seed(store) == max(seeds_a + seeds_b) + 1
    # a seed given on the command line is used as given (a deliberate repeat), and claims nothing
    fixed = RecordingSession(sim_rig, store, SessionSettings(task="t", episodes=2, episode_s=1.0, seed=0))
    assert [fixed._seed(k) for k in range(2)] == [0, 1] and len(recording.claimed_sim_seeds(store)) == 6


CLAIMER = r'''
import sys
sys.path.insert(0, sys.argv[1])
from recorder.store import DatasetStore
from workbench.recording import claim_sim_seed
store = DatasetStore(sys.argv[2])
print(" ".join(str(claim_sim_seed(store)) for _ in range(int(sys.argv[3]))), flush=True)
'''


def test_seed_claims_are_atomic_across_processes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    DatasetStore(tmp_path / "ds", create=True)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(root), str(tmp_path / "ds"), "40"],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    seeds = [int(x) for p in procs for x in p.communicate(timeout=120)[0].split()]
    assert len(seeds) == 120 and len(set(seeds)) == 120, sorted(seeds)
