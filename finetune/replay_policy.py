"""A replay policy: a recorded episode's actions served as action chunks, through the real transform chain.

It stands in for a trained policy wherever one is served (`workbench serve FOLDER`, LocalPolicyServer, the trial
runner), so the whole serving path -- wire protocol, transforms, chunk scheduling on the control side -- can be
exercised and checked against known-good actions without a GPU or a trained model:

    make_replay_policy("data/cube/episode_3.hdf5", "runs/replay_ep3", horizon=50)
    policy = ReplayPolicy.load("runs/replay_ep3")                         # what `workbench serve` serves for it
    actions = policy.infer(state14, images, prompt, step=t)               # [50, 14] rig units

The folder holds replay.json (format, the episode's states and actions in rig units, prompt, cameras) and the
files a trained policy folder has for serving: transforms.json, norm_stats.json (computed over this episode alone,
openpi layout) and rig.json (the episode's rig snapshot, so `--rig` checks work as for a trained policy).

How a chunk is made. The TransformConfig is training's default for the rig (finetune.data: adapt_to_pi with
ALOHA's 14 joints, delta joints on the 12 arm joints, grippers absolute, z-score, pad to 32). For every recorded
step t the target chunk actions[t : t+H] (padded with the last action) is mapped into model space exactly as the
training dataset maps it -- relative to the *recorded* state[t] -- and kept. `infer(..., step=t)` takes that model
chunk and converts it back with `transforms.actions(model_chunk, live_state)`, as the runtime does with a model's
output. Consequences of the delta joints:
- live state == recorded state[t]: the recorded actions come back exactly (float tolerance);
- a live state that differs by d on an arm joint shifts that joint's whole chunk by d (a trained policy's output
  is relative to the state too); grippers are absolute and never shift.
So the replay reproduces the demonstration's *motion* from wherever the arms are, which is what a perfectly
trained policy would do; an open-loop replay of absolute joints is `workbench.replay`, not this.

Steps at or past the episode end serve the last recorded action (the chunk of the last step). `infer` needs
`step`: without it there is nothing to look up (a clear ValueError; over the wire, an error reply). The prefix and
delay of real-time chunking are accepted and ignored: the replay is deterministic, so it continues any prefix it
produced itself. Images and prompt are ignored.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

REPLAY_FILE = "replay.json"
REPLAY_FORMAT = "aloha-workbench/replay-policy"
REPLAY_VERSION = 1


class ReplayPolicyError(ValueError):
    """A replay folder or episode that cannot be served; the message names it."""


def is_replay_folder(folder: str | Path) -> bool:
    return (Path(folder) / REPLAY_FILE).is_file()


def _transform_config(dim: int, horizon: int):
    """Training's chain for an episode of `dim` joints (finetune.data.build_training_data's choice)."""
    import dataclasses

    from finetune.model_config import OPENPI_CAMERAS
    from finetune.episodes import ALOHA_DIM_NAMES
    from finetune.transforms import TransformConfig

    if dim == len(ALOHA_DIM_NAMES):
        return TransformConfig(camera_slots=OPENPI_CAMERAS, action_horizon=horizon)
    base = TransformConfig(camera_slots=OPENPI_CAMERAS, action_horizon=horizon, adapt_to_pi=False)
    return dataclasses.replace(base, rig_dim=dim, joint_flip=(1.0,) * dim, gripper_dims=(),
                               delta_mask=(True,) * dim)


def make_replay_policy(episode_path: str | Path, out_folder: str | Path, horizon: int = 50) -> Path:
    """Writes a replay policy folder for one recorded episode (our HDF5 format or an imported ALOHA file)."""
    from finetune.episode_set import Episode, EpisodeSet
    from finetune.episodes import ALOHA_DIM_NAMES, RIG_FILE, rig_snapshot
    from finetune.stats import compute_norm_stats
    from finetune.transforms import PolicyTransforms
    from recorder.reader import EpisodeReader

    path = Path(episode_path)
    if not path.is_file():
        raise ReplayPolicyError(f"episode {path} does not exist")
    if horizon < 1:
        raise ReplayPolicyError(f"horizon must be >= 1, not {horizon}")
    try:
        with EpisodeReader(path) as r:
            info = r.info
            state, actions = r.qpos, r.action
    except (OSError, KeyError, ValueError) as e:
        raise ReplayPolicyError(f"{path}: unreadable episode ({e})") from None
    if state is None or actions is None:
        raise ReplayPolicyError(f"{path}: the episode has no joint states or actions")
    state, actions = np.asarray(state, np.float64), np.asarray(actions, np.float64)
    if state.ndim != 2 or actions.shape != state.shape or len(state) < 1:
        raise ReplayPolicyError(f"{path}: states {state.shape} and actions {actions.shape} do not match")
    if not (np.isfinite(state).all() and np.isfinite(actions).all()):
        raise ReplayPolicyError(f"{path}: non-finite joint values")
    dim = state.shape[1]
    tc = _transform_config(dim, horizon)
    names = ALOHA_DIM_NAMES if dim == len(ALOHA_DIM_NAMES) else tuple(f"dim_{i}" for i in range(dim))
    import warnings

    with warnings.catch_warnings():  # near-constant dims of a single episode are only centred (training's "fix")
        warnings.simplefilter("ignore")
        stats = compute_norm_stats([(state, actions)], tc, dim_names=names, low_std="fix", n_episodes=1).stats
    ep = Episode(id=info.name, state=state, actions=actions, task=info.task, subtasks=None, frame_tasks=None,
                 cameras=tuple(info.cameras), control_hz=info.control_hz, rig_config=info.rig_config)
    snap = rig_snapshot(EpisodeSet(str(path.parent), "hdf5", (ep,), frames=None))  # type: ignore[arg-type]

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    PolicyTransforms(tc, stats).save(out)
    (out / RIG_FILE).write_text(json.dumps(snap.to_json(), indent=1) + "\n")
    record = {"format": REPLAY_FORMAT, "version": REPLAY_VERSION, "episode": info.name,
              "episode_path": str(path.resolve()), "task": info.task, "cameras": list(info.cameras),
              "control_hz": info.control_hz, "steps": int(len(state)), "horizon": int(horizon),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "state": state.tolist(), "actions": actions.tolist()}  # JSON floats round-trip float64 exactly
    tmp = out / (REPLAY_FILE + ".partial")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(out / REPLAY_FILE)
    return out


@dataclass
class ReplayPolicy:
    """Serves a recorded episode's actions by step; see the module docstring for the transform round trip."""

    folder: Path
    record: Mapping[str, Any]
    transforms: Any  # finetune.transforms.PolicyTransforms
    rig_snapshot: Any  # finetune.episodes.RigSnapshot | None
    model_chunks: np.ndarray  # [T, H, action_dim] float64: chunk targets in model space (relative to state[t])

    @classmethod
    def load(cls, folder: str | Path, *, rig: Any = None) -> "ReplayPolicy":
        """With `rig`, refuses a replay recorded on a different rig (as PolicyRuntime.load does)."""
        from finetune.runtime import check_rig
        from finetune.transforms import PolicyTransforms
        from finetune.transforms.chunks import chunk_indices

        folder = Path(folder)
        try:
            record = json.loads((folder / REPLAY_FILE).read_text())
        except (OSError, ValueError) as e:
            raise ReplayPolicyError(f"{folder}: cannot read {REPLAY_FILE} ({e})") from None
        if record.get("format") != REPLAY_FORMAT or int(record.get("version", 0)) > REPLAY_VERSION:
            raise ReplayPolicyError(f"{folder}: unsupported replay format {record.get('format')!r} "
                                    f"v{record.get('version')}")
        snapshot = check_rig(folder, rig, "replay policy {folder} was recorded on")
        try:
            pt = PolicyTransforms.from_folder(folder)
        except (OSError, ValueError, KeyError) as e:
            raise ReplayPolicyError(f"{folder}: cannot read its transforms ({e})") from None
        state = np.asarray(record["state"], np.float64)
        actions = np.asarray(record["actions"], np.float64)
        horizon = int(record["horizon"])
        if horizon != pt.config.action_horizon or state.shape != actions.shape or state.ndim != 2 \
                or state.shape[1] != pt.config.rig_dim or len(state) < 1:
            raise ReplayPolicyError(f"{folder}: {REPLAY_FILE} (states {state.shape}, horizon {horizon}) does not match "
                                    f"transforms.json (rig_dim {pt.config.rig_dim}, horizon "
                                    f"{pt.config.action_horizon})")
        idx, _ = chunk_indices(np.arange(len(state)), len(state), horizon)
        chunks = pt.state_actions(state, actions[idx]).actions  # exactly the training dataset's mapping
        return cls(folder, record, pt, snapshot, np.asarray(chunks, np.float64))

    # -- what a server needs ------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return int(self.model_chunks.shape[0])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.record.get("cameras") or ())

    @property
    def action_shape(self) -> tuple[int, int]:
        return (self.transforms.config.action_horizon, self.transforms.config.rig_dim)

    def metadata(self) -> dict[str, Any]:
        from finetune.rig_check import rig_metadata

        snap = self.rig_snapshot
        return {"policy": str(self.folder), "policy_type": "replay", "replay": True,
                "episode": self.record.get("episode"), "episode_steps": self.steps, "step": None,
                "model": "replay", "cameras": list(self.cameras), "action_horizon": self.action_shape[0],
                "action_dim": self.action_shape[1], "rig": snap.name if snap else None,
                "control_hz": (snap.control_hz if snap else None) or self.record.get("control_hz"),
                **rig_metadata(snap), "task": self.record.get("task")}

    def recorded(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(recorded state at `step`, recorded actions[step : step+H] padded) in rig units, for checks."""
        from finetune.transforms.chunks import action_chunk

        t = min(int(step), self.steps - 1)
        state = np.asarray(self.record["state"], np.float64)
        actions = np.asarray(self.record["actions"], np.float64)
        return state[t], action_chunk(actions, int(step), self.action_shape[0])[0]

    def infer(self, state14: np.ndarray, images: Mapping[str, np.ndarray] | None = None, prompt: str = "",
              noise: Any = None, *, seed: int | None = None, prefix: np.ndarray | None = None, delay: int = 0,
              step: int | None = None) -> np.ndarray:
        """-> rig actions [H, rig_dim] float32 for control tick `step` (required), relative to the live state."""
        if step is None:
            raise ValueError("a replay policy looks its chunk up by the control step: send `step` (the trial tick "
                             "index; over the wire the observation's \"step\" field)")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        state = np.asarray(state14, dtype=np.float64)
        if state.shape != (self.action_shape[1],):
            raise ValueError(f"state must have shape ({self.action_shape[1]},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError("state has non-finite values")
        t = min(int(step), self.steps - 1)  # past the end: the last step's chunk (all the last action)
        return self.transforms.actions(self.model_chunks[t], state)


__all__ = ["REPLAY_FILE", "ReplayPolicy", "ReplayPolicyError", "is_replay_folder", "make_replay_policy"]
