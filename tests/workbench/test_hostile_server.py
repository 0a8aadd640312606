"""A hostile policy server driving `workbench trials` (issue 19.2-3): real websocket servers speaking openpi's
protocol (serving.server.PolicyServer with a hostile policy; a bare websockets server for a dying connection),
reached by the CLI's own function in-process, on the simulator and on the virtual rig (real clock).

Whatever the server answers -- NaN, inf, the wrong shape, 1e6 rad, alternating extremes, steps beyond the velocity
limit, a range the policy never saw in training, a reply later than the age limit, a connection that dies -- no
recorded command steps beyond the safety layer's cap, the arms never move toward the wild target, the operator
gets one clear line per trial, the trial ends "aborted" with the refusals in its record, and the next trial runs.
"""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from recorder.reader import EpisodeReader, read_info
from recorder.store import DatasetStore
from serving.protocol import packb, parse_observation, unpackb
from serving.server import PolicyServer, ServeConfig
from workbench.cli import main as cli_main
from workbench.safety import SafetyConfig

H = 50
RAMP = 0.004  # rad per step of the left waist in a sane chunk
GOOD = 1  # sane answers (after the warm-up) before the hostility starts
CAMERAS = ["cam_high", "cam_left_wrist", "cam_right_wrist"]  # the sim and virtual rigs' (the rig check's)
# an announced trained range: arm joints within +-0.25 rad of the observed state, grippers absolute
BOUNDS = {"lo": ([-0.25] * 6 + [-0.1]) * 2, "hi": ([0.25] * 6 + [1.1]) * 2,
          "relative": ([True] * 6 + [False]) * 2}


def sane(state: np.ndarray) -> np.ndarray:
    chunk = np.tile(np.asarray(state, np.float64), (H, 1))
    chunk[:, 0] += RAMP * np.arange(H)
    return chunk


class Hostile:
    """A policy for PolicyServer: sane for the warm-up (zero state) and the first GOOD requests, then `kind`."""

    action_shape = (H, 14)

    def __init__(self, kind: str, late_s: float = 1.5, bounds: dict | None = None):
        self.kind, self.late_s, self.bounds = kind, late_s, bounds
        self.calls = 0
        self.connections = 0  # metadata() calls: once per client connection once the server runs
        self.lock = threading.Lock()

    def metadata(self) -> dict:
        self.connections += 1
        meta = {"policy": f"runs/hostile_{self.kind}/policy", "step": 1, "task": "wave", "action_horizon": H,
                "action_dim": 14, "cameras": CAMERAS, "control_hz": 50, "image_cameras": [],
                "image_size": None}
        if self.bounds is not None:
            meta["action_bounds"] = self.bounds
        return meta

    def infer(self, state, images, prompt, seed=None, step=None):
        state = np.asarray(state, np.float64)
        chunk = sane(state)
        if not state.any():  # the launcher's warm-up
            return chunk
        with self.lock:
            n, self.calls = self.calls, self.calls + 1
        if n < GOOD:
            return chunk
        k = self.kind
        if k == "nan":
            chunk[7, 1] = np.nan
        elif k == "inf":
            chunk[:, 8] = np.inf
        elif k == "shape":
            return chunk[:, :7]
        elif k == "huge":  # the shoulder to 1e6 rad
            chunk[:, 1] = 1e6
        elif k == "alternating":  # the waist +-3 rad (inside its limits)
            chunk[:, 0] = np.where(np.arange(H) % 2, 3.0, -3.0)
        elif k == "thrash":  # from where the arm is, 0.2 rad up and back every step (10 rad/s)
            chunk[:, 0] = state[0] + np.where(np.arange(H) % 2, 0.2, 0.0)
        elif k == "untrained":  # a smooth shoulder motion of 0.6 rad: inside the joint limits, not the trained range
            chunk[:, 1] = state[1] + np.linspace(0.0, 0.6, H)
        elif k == "late":  # the waist down 0.5 rad, answered after the age limit
            time.sleep(self.late_s)
            chunk[:, 0] = state[0] - 0.01 * np.arange(H)
        return chunk


@pytest.fixture
def hostile_server():
    servers = []

    def start(kind: str, **kw) -> tuple[str, Hostile]:
        policy = Hostile(kind, **kw)
        server = PolicyServer(policy, ServeConfig(port=0))
        port = server.start_in_thread()
        policy.connections = 0  # from here on: one per client connection
        servers.append(server)
        return f"ws://127.0.0.1:{port}", policy

    yield start
    for s in servers:
        s.stop()


class DyingServer:
    """openpi's protocol on a bare websockets server: metadata, sane replies to the warm-up and the first GOOD
    requests, then every request's connection is cut before the reply (`gone`: and the server stops listening)."""

    def __init__(self, gone: bool = False):
        self.gone = gone
        self.calls = 0
        self.port: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handle(self, ws) -> None:
        meta = {"policy": "runs/hostile_dying/policy", "step": 1, "task": "wave", "action_horizon": H,
                "action_dim": 14, "cameras": CAMERAS, "control_hz": 50, "image_cameras": [],
                "image_size": None}
        await ws.send(packb(meta))
        async for message in ws:
            state, _, _, _ = parse_observation(unpackb(message), 14)
            warmup = not np.asarray(state).any()
            if not warmup:
                self.calls += 1
            if warmup or self.calls <= GOOD:
                await ws.send(packb({"actions": sane(state).astype(np.float32)}))
                continue
            if self.gone:
                self._server.close(close_connections=False)
            ws.transport.abort()  # the connection dies mid-request
            return

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        loop = self._stop.get_loop()
        loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
        self._thread.join(10)


def run_cli(capsys, rig: str, url: str, dataset, *extra: str) -> str:
    rc = cli_main(["trials", "--rig", rig, "--policy", url, "--trials", "2", "--dataset", str(dataset),
                   "--time-limit-s", "4", "--no-takeover", *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def check_refused(out: str, dataset, kinds: set[str], reason: str, wild_joint: int | None = None,
                  sane_steps: int = 25, ran: int = 2) -> list[dict]:
    """Both trials ran (`ran` 1: only the first, the policy was lost then) and ended aborted; one clear line each; commands within the
    cap and never toward the wild target; the refusals in the record. -> the trial records."""
    assert "trial 1/2" in out and ("trial 2/2" in out) == (ran == 2), out
    lines = [ln for ln in out.splitlines() if ln.startswith("  -> aborted (aborted: ")]
    assert len(lines) == ran, out
    assert all("refused 3 times in a row" in ln and reason in ln for ln in lines), lines
    assert out.count("chunk refused (") == 3 * ran, out  # each refusal as it happened
    step = np.tile(SafetyConfig().step_array(50.0), 2)
    store = DatasetStore(dataset)
    trials = []
    for ep in sorted(store.list(), key=lambda e: e.name):
        path = store.path(ep.name)
        trial = read_info(path).trial
        trials.append(trial)
        assert trial["ended_by"] == "aborted" and "refused 3 times in a row" in trial["aborted"]
        assert ep.outcome == "aborted"  # not a policy failure
        assert len(trial["refusals"]) == 3 and {r["kind"] for r in trial["refusals"]} <= kinds, trial["refusals"]
        with EpisodeReader(path) as r:
            cmd, act = np.asarray(r.command, np.float64), np.asarray(r.action, np.float64)
        assert (np.abs(np.diff(cmd, axis=0)) <= step + 1e-6).all(), "a command stepped beyond the cap"
        # only the sane chunk ran (the waist up RAMP per step, 25 steps in sync, 50 in async), then they held
        moved = act - act[0]
        assert -0.03 < moved[:, 0].min() and moved[:, 0].max() < sane_steps * RAMP + 0.03, moved[:, 0]
        assert np.abs(moved[:, 1:]).max() < 0.03, "an arm moved toward the wild target"
        if wild_joint:  # the waist (0) is the sane chunk's: bounded above
            assert np.abs(cmd[:, wild_joint] - cmd[0, wild_joint]).max() < 0.03
    assert len(trials) == ran  # the next trial ran (unless the policy was lost)
    return trials


CASES = [  # kind, refusal kinds, words of the operator's line, the joint it aims at
    ("nan", {"failed"}, "non-finite actions", 1),
    ("inf", {"failed"}, "non-finite actions", 8),
    ("shape", {"failed"}, "sent actions of shape [50, 7]", None),
    ("huge", {"joint_limits"}, "left_shoulder asks for 1e+06 rad", 1),
    ("alternating", {"jump"}, "left_waist: its first action is", 0),
    ("thrash", {"velocity"}, "left_waist moves 0.200 rad between actions", 0),
    ("untrained", {"trained_range"}, "outside the range the policy was trained on", 1),
]


@pytest.mark.parametrize("kind,kinds,reason,joint", CASES, ids=[c[0] for c in CASES])
def test_wild_chunks_from_a_hostile_server_are_refused_on_the_simulator(hostile_server, capsys, tmp_path, kind,
                                                                        kinds, reason, joint):
    url, policy = hostile_server(kind, bounds=BOUNDS if kind == "untrained" else None)
    out = run_cli(capsys, "sim-transfer-cube", url, tmp_path / "trials")
    trials = check_refused(out, tmp_path / "trials", kinds, reason, joint)
    assert len(trials[0]["chunks"]) == GOOD and not trials[1]["chunks"]  # only the sane chunk ever ran


def test_a_late_reply_is_refused_on_the_simulator(hostile_server, capsys, tmp_path):
    """Ages on the simulator are sim time, which runs at the rendering's pace (slower than wall time on a loaded
    CPU): a rig file with `[safety] max_chunk_age_s = 0.1` (5 ticks) makes 1.5 s of wall time surely late."""
    from workbench.config import load_rig_config

    rig = tmp_path / "sim.toml"
    rig.write_text(load_rig_config("sim-transfer-cube").text.rstrip() + "\n\n[safety]\nmax_chunk_age_s = 0.1\n")
    url, policy = hostile_server("late", late_s=1.5)
    out = run_cli(capsys, str(rig), url, tmp_path / "trials", "--mode", "async")
    assert "chunks older than 0.1 s or wild are refused" in out
    trials = check_refused(out, tmp_path / "trials", {"stale"}, "no reply", sane_steps=50)
    assert all(r["age_s"] > 0.1 for t in trials for r in t["refusals"]) and trials[0]["max_chunk_age_s"] == 0.1


@pytest.mark.parametrize("gone", [False, True], ids=["connection-dies", "server-gone"])
def test_a_dying_connection_aborts_the_trial_and_the_next_one_runs(capsys, tmp_path, gone):
    """The connection is cut mid-request: each request is a refused chunk, the trial aborts; before the next trial
    the client connects again (said once) and the next one runs. A server gone for good: the reconnection is
    refused, the operator reads why in one line, the trials end there (no traceback, the episode kept)."""
    server = DyingServer(gone=gone)
    try:
        out = run_cli(capsys, "sim-transfer-cube", server.url, tmp_path / "trials")
    finally:
        server.stop()
    check_refused(out, tmp_path / "trials", {"failed"},
                  "cannot connect" if gone else "closed the connection during a request", ran=1 if gone else 2)
    if gone:
        (lost,) = [ln for ln in out.splitlines() if ln.startswith("policy lost: ")]
        assert "connection refused" in lost and "1 trial not run; the followers hold" in out, out
        assert "Traceback" not in out
    else:
        assert out.count(f"policy server: reconnected to the policy server at {server.url}") == 1, out


@pytest.mark.parametrize("kind", ["late", "huge"])
def test_a_hostile_server_on_the_virtual_rig(hostile_server, capsys, tmp_path, kind):
    """The real clock: a reply later than the age limit is refused when the limit passes (the client gives up
    waiting then: it reconnects for each next request instead of waiting 30 s), and a wild one at once."""
    url, policy = hostile_server(kind, late_s=1.5)
    t0 = time.monotonic()
    out = run_cli(capsys, "virtual", url, tmp_path / "trials")
    trials = check_refused(out, tmp_path / "trials", {"stale", "failed"} if kind == "late" else {"joint_limits"},
                           "no reply" if kind == "late" else "left_shoulder asks for 1e+06 rad", 1)
    if kind == "late":
        refusals = [r for t in trials for r in t["refusals"]]
        assert all(0.5 <= r["age_s"] < 0.7 for r in refusals), refusals  # refused as the limit passed
        # the client gave up on each late reply at the limit and reconnected for the next request (opening: 1)
        assert policy.connections >= 4, (policy.connections, "the client waited for late replies")
        assert all(t["duration_s"] < 2.5 for t in trials), [t["duration_s"] for t in trials]
    assert time.monotonic() - t0 < 120
