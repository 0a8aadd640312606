"""The simulated ALOHA world: gym-aloha's bimanual ViperX model, its two tasks, randomization and reward.

Physics runs in ticks of 20 ms (50 Hz control, as ALOHA and gym-aloha) made of 10 MuJoCo steps of 2 ms. The
step order reproduces dm_control's "legacy" step that gym-aloha uses (mj_step2, mj_step x (n-1), mj_step1), so
contacts, and therefore the reward, always describe the state at the end of the tick.

Time and tick counters never go back, not even at `reset()`: a reset takes one tick of sim time, so every world
state has its own tick (the camera frame `seq`) and the control loop's deadlines stay valid across episodes.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import mujoco
import numpy as np

from drivers.arm import ARM_JOINTS, DEFAULT_CONTROL_HZ, SIDES, START_POSE
from drivers.errors import DriverError
from drivers.sim.assets import asset_path
from drivers.sim.rendering import RenderPool

CONTROL_DT = 1.0 / DEFAULT_CONTROL_HZ  # s per tick: gym-aloha's 50 Hz, so a sim rig runs at exactly that rate
START_FINGER = 0.02239  # gym-aloha's start finger position (m): normalized ~0.0998 with the aloha1 constants
ARM_START_QPOS = np.concatenate([START_POSE, [START_FINGER, -START_FINGER]])  # 6 joints + 2 fingers per side


@dataclass(frozen=True)
class ObjectRange:
    """Uniform position range of one free-joint object; orientation stays upright (quat 1 0 0 0)."""

    joint: str
    low: tuple[float, float, float]
    high: tuple[float, float, float]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    xml: str  # joint-position-controlled model
    ee_xml: str  # mocap (end-effector) model used to script demonstrations
    objects: tuple[ObjectRange, ...]  # also the sampling order (seed -> poses matches gym-aloha)
    episode_ticks: int = 400  # ACT / gym-aloha episode length
    max_reward: int = 4
    prompt: str = ""
    stages: tuple[str, ...] = ()  # what reward 1..max_reward means (how far a failed rollout got)
    # what each gripper reaches for: (side, object geoms). A failed rollout's closest approach to them says whether
    # the policy found the object at all (centimetres) or found it and missed the grasp (millimetres).
    reach: tuple[tuple[str, tuple[str, ...]], ...] = ()


TASKS: dict[str, TaskSpec] = {
    "transfer_cube": TaskSpec(
        "transfer_cube", "bimanual_viperx_transfer_cube.xml", "bimanual_viperx_end_effector_transfer_cube.xml",
        (ObjectRange("red_box_joint", (0.0, 0.4, 0.05), (0.2, 0.6, 0.05)),),
        prompt="Pick up the cube with the right arm and transfer it to the left arm.",
        stages=("reached (right fingers on the cube)", "lifted", "handed over (left fingers on the cube)",
                "transferred"),
        reach=(("right", ("red_box",)),),
    ),
    "insertion": TaskSpec(
        "insertion", "bimanual_viperx_insertion.xml", "bimanual_viperx_end_effector_insertion.xml",
        (ObjectRange("red_peg_joint", (0.1, 0.4, 0.05), (0.2, 0.6, 0.05)),
         ObjectRange("blue_socket_joint", (-0.2, 0.4, 0.05), (-0.1, 0.6, 0.05))),
        prompt="Insert the peg into the socket.",
        stages=("grasped both", "lifted both", "peg at the socket", "inserted"),
        reach=(("right", ("red_peg",)), ("left", ("socket-1", "socket-2", "socket-3", "socket-4"))),
    ),
}


def task_spec(task: str) -> TaskSpec:
    key = task.strip().lower().replace("-", "_")
    key = {"aloha_transfer_cube": "transfer_cube", "sim_transfer_cube": "transfer_cube",
           "aloha_insertion": "insertion", "sim_insertion": "insertion"}.get(key, key)
    if key not in TASKS:
        raise DriverError(f"unknown sim task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[key]


def sample_object_poses(task: TaskSpec, seed: int | None) -> dict[str, np.ndarray]:
    """Object poses (x y z qw qx qy qz) per free joint. Drawn like gym-aloha (RandomState(seed).uniform per
    object, in order) so a seed gives the same layout here as in gym-aloha / LeRobot evaluations."""
    rng = np.random.RandomState(seed)
    poses = {}
    for obj in task.objects:
        xyz = rng.uniform(np.array(obj.low), np.array(obj.high))
        poses[obj.joint] = np.concatenate([xyz, [1.0, 0.0, 0.0, 0.0]])
    return poses


@dataclass(frozen=True)
class ArmIndex:
    """Where one arm lives in the model: qpos/qvel addresses and actuator ids."""

    qpos: np.ndarray  # (6,) arm joints
    qvel: np.ndarray  # (6,)
    finger_qpos: np.ndarray  # (2,) left finger (+), right finger (-)
    finger_qvel: np.ndarray  # (2,)
    actuators: np.ndarray  # (6,) arm joint position actuators
    finger_actuators: np.ndarray  # (2,)


def _geom_id(model: mujoco.MjModel, name: str) -> int:
    gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
    if gid < 0:
        raise DriverError(f"sim model has no geom {name!r}")
    return gid


def contact_pairs(model: mujoco.MjModel, data: mujoco.MjData) -> set[frozenset[int]]:
    n = data.ncon
    if n == 0:
        return set()
    g1, g2 = data.contact.geom1[:n], data.contact.geom2[:n]
    return {frozenset((int(a), int(b))) for a, b in zip(g1, g2)}


def make_reward_fn(task: TaskSpec, model: mujoco.MjModel) -> Callable[[mujoco.MjData], int]:
    """gym-aloha's reward (0..4, success = 4) from the contacts of the current state, for either model variant."""
    left_finger = _geom_id(model, "vx300s_left/10_left_gripper_finger")
    right_finger = _geom_id(model, "vx300s_right/10_right_gripper_finger")
    table = _geom_id(model, "table")

    def touching(pairs: set[frozenset[int]], a: int, bs) -> bool:
        return any(frozenset((a, b)) in pairs for b in bs)

    if task.name == "transfer_cube":
        box = _geom_id(model, "red_box")

        def reward(data: mujoco.MjData) -> int:
            pairs = contact_pairs(model, data)
            left = touching(pairs, box, [left_finger])
            right = touching(pairs, box, [right_finger])
            on_table = touching(pairs, box, [table])
            r = 0
            if right:
                r = 1
            if right and not on_table:  # lifted
                r = 2
            if left:  # attempted transfer
                r = 3
            if left and not on_table:  # transferred
                r = 4
            return r

        return reward

    peg = _geom_id(model, "red_peg")
    pin = _geom_id(model, "pin")
    sockets = [_geom_id(model, f"socket-{i}") for i in range(1, 5)]

    def reward(data: mujoco.MjData) -> int:
        pairs = contact_pairs(model, data)
        right = touching(pairs, peg, [right_finger])
        left = any(touching(pairs, s, [left_finger]) for s in sockets)
        peg_table = touching(pairs, peg, [table])
        socket_table = any(touching(pairs, s, [table]) for s in sockets)
        peg_socket = touching(pairs, peg, sockets)
        r = 0
        if left and right:  # touching both
            r = 1
        if left and right and not peg_table and not socket_table:  # both lifted
            r = 2
        if peg_socket and not peg_table and not socket_table:  # peg in the socket's mouth
            r = 3
        if touching(pairs, peg, [pin]):  # inserted
            r = 4
        return r

    return reward


REACH_CAP_M = 1.0  # distances beyond this are reported as this (mj_geomDistance's search radius)
WITNESS_TOL_M = 1e-3


def make_reach_fn(task: TaskSpec, model: mujoco.MjModel) -> Callable[[mujoco.MjData], dict[str, float]]:
    """Per side in `task.reach`: the surface distance (m) from that gripper's fingers to its object (0 = touching).

    mj_geomDistance between the finger meshes and a box now and then returns 0.0 from a failed convex solve (a few
    ticks per episode, with witness points centimetres apart); a distance is kept only when its witness points agree
    with it, and a side with no trustworthy pair this tick is left out."""
    pairs = {side: [(_geom_id(model, f"vx300s_{side}/10_{finger}_gripper_finger"), _geom_id(model, obj))
                    for finger in ("left", "right") for obj in objects]
             for side, objects in task.reach}
    fromto = np.zeros(6)

    def distance(data: mujoco.MjData, a: int, b: int) -> float | None:
        d = mujoco.mj_geomDistance(model, data, a, b, REACH_CAP_M, fromto)
        if d >= REACH_CAP_M:
            return REACH_CAP_M
        if abs(float(np.linalg.norm(fromto[:3] - fromto[3:])) - abs(d)) > WITNESS_TOL_M:
            return None
        return max(0.0, d)

    def reach(data: mujoco.MjData) -> dict[str, float]:
        out: dict[str, float] = {}
        for side, ab in pairs.items():
            ds = [d for d in (distance(data, a, b) for a, b in ab) if d is not None]
            if ds:
                out[side] = min(ds)
        return out

    return reach


def arm_index(model: mujoco.MjModel, side: str) -> ArmIndex:
    if side not in SIDES:
        raise DriverError(f"unknown arm side {side!r}; choose one of {SIDES}")

    def joint(name: str) -> int:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{name}")
        if jid < 0:
            raise DriverError(f"sim model has no joint vx300s_{side}/{name}")
        return jid

    def actuator_of(jid: int) -> int:
        hits = np.flatnonzero((model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT) & (model.actuator_trnid[:, 0] == jid))
        return int(hits[0]) if len(hits) else -1

    arm = [joint(n) for n in ARM_JOINTS]
    fingers = [joint("left_finger"), joint("right_finger")]
    return ArmIndex(
        qpos=np.array([model.jnt_qposadr[j] for j in arm]),
        qvel=np.array([model.jnt_dofadr[j] for j in arm]),
        finger_qpos=np.array([model.jnt_qposadr[j] for j in fingers]),
        finger_qvel=np.array([model.jnt_dofadr[j] for j in fingers]),
        actuators=np.array([actuator_of(j) for j in arm]),
        finger_actuators=np.array([actuator_of(j) for j in fingers]),
    )


def substeps_per_tick(model: mujoco.MjModel) -> int:
    n = CONTROL_DT / model.opt.timestep
    if abs(n - round(n)) > 1e-6:
        raise DriverError(f"physics timestep {model.opt.timestep} does not divide the 20 ms control tick")
    return int(round(n))


def step_tick(model: mujoco.MjModel, data: mujoco.MjData, substeps: int) -> None:
    """One control tick, dm_control-legacy order: the tick ends with mj_step1 so contacts are current."""
    mujoco.mj_step2(model, data)
    if substeps > 1:
        mujoco.mj_step(model, data, substeps - 1)
    mujoco.mj_step1(model, data)


@dataclass
class _Episode:
    index: int = 0
    seed: int | None = None
    start_tick: int = 0
    initial_object_poses: dict[str, np.ndarray] = field(default_factory=dict)
    max_reward: int = 0


class AlohaSim:
    """One simulated ALOHA world shared by both follower arms, the cameras, the clock and the scripted leaders.

    Every access that touches `data` goes through `lock` (a GUI thread may render while the loop steps).
    """

    def __init__(self, task: str = "transfer_cube", seed: int | None = 0, render_quality: str = "fast"):
        self.task = task_spec(task)
        self.model = mujoco.MjModel.from_xml_path(str(asset_path(self.task.xml)))
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        self.substeps = substeps_per_tick(self.model)
        self.dt = CONTROL_DT
        self._reward_fn = make_reward_fn(self.task, self.model)
        self._reach_fn = make_reach_fn(self.task, self.model)
        self._arms = {side: arm_index(self.model, side) for side in SIDES}
        self._object_qpos = {
            o.joint: int(self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, o.joint)])
            for o in self.task.objects
        }
        self._tick = 0
        self._reward = 0
        self._reach: dict[str, float] = {}
        self._episode = _Episode(index=-1)
        self.renders = RenderPool(self, render_quality)
        self.reset(seed)

    # --- time -------------------------------------------------------------------------------------------------
    @property
    def tick(self) -> int:
        """Ticks since the world was built (monotonic; also each camera frame's seq)."""
        return self._tick

    @property
    def time(self) -> float:
        """Sim time in seconds = tick * 20 ms, computed (not accumulated) so it is exact tick multiples."""
        return self._tick * self.dt

    @property
    def episode(self) -> int:
        return self._episode.index

    @property
    def episode_tick(self) -> int:
        """Ticks since the last reset (0 right after reset)."""
        return self._tick - self._episode.start_tick

    @property
    def seed(self) -> int | None:
        return self._episode.seed

    # --- episodes ---------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """New episode: arms at ALOHA's start pose (fingers as gym-aloha), objects re-drawn from `seed`.

        Actuator torque states (SimArm.set_torque) are kept; the follower goals are reset to the start pose.
        """
        poses = sample_object_poses(self.task, seed)
        with self.lock:
            mujoco.mj_resetData(self.model, self.data)
            for side in SIDES:
                ix = self._arms[side]
                self.data.qpos[ix.qpos] = START_POSE
                self.data.qpos[ix.finger_qpos] = [START_FINGER, -START_FINGER]
                self.data.ctrl[ix.actuators] = START_POSE
                self.data.ctrl[ix.finger_actuators] = [START_FINGER, -START_FINGER]
            for joint, pose in poses.items():
                adr = self._object_qpos[joint]
                self.data.qpos[adr:adr + 7] = pose
            self._tick += 1  # a reset takes one tick: every state gets its own tick / frame seq
            self.data.time = self.time
            mujoco.mj_forward(self.model, self.data)
            self._episode = _Episode(self._episode.index + 1, seed, self._tick,
                                     {k: v.copy() for k, v in poses.items()})
            self._reward, self._reach = self._reward_fn(self.data), self._reach_fn(self.data)
            self._episode.max_reward = self._reward

    @property
    def initial_object_poses(self) -> dict[str, np.ndarray]:
        """Object poses this episode started from (what the demonstrator plans against)."""
        return {k: v.copy() for k, v in self._episode.initial_object_poses.items()}

    def object_poses(self) -> dict[str, np.ndarray]:
        with self.lock:
            return {j: self.data.qpos[a:a + 7].copy() for j, a in self._object_qpos.items()}

    # --- physics ----------------------------------------------------------------------------------------------
    def step(self, ticks: int = 1) -> None:
        """Advance `ticks` control ticks with the current actuator goals."""
        for _ in range(ticks):
            with self.lock:
                step_tick(self.model, self.data, self.substeps)
                self._tick += 1
                self.data.time = self.time
                self._reward, self._reach = self._reward_fn(self.data), self._reach_fn(self.data)
                self._episode.max_reward = max(self._episode.max_reward, self._reward)

    def reward(self) -> int:
        """gym-aloha's reward of the current state (0..4)."""
        return self._reward

    @property
    def max_reward(self) -> int:
        """Highest reward seen this episode."""
        return self._episode.max_reward

    def reach(self) -> dict[str, float]:
        """Per gripper side, its fingers' distance to the task's object now (m; 0 = touching). Callers keep their
        own minimum over the span they judge (a trial, a stall), not the episode's, which includes the start-up."""
        return dict(self._reach)

    @property
    def success(self) -> bool:
        """The episode reached the task's max reward (4) at some tick (ACT's success criterion)."""
        return self._episode.max_reward >= self.task.max_reward

    def arm_index(self, side: str) -> ArmIndex:
        return self._arms[side]

    def joint_limits(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of the six arm joints from the model's joint ranges (unlimited joints: +-pi)."""
        model, ix = self.model, self._arms[side]
        jids = [int(np.flatnonzero(model.jnt_qposadr == a)[0]) for a in ix.qpos]
        lo = np.array([model.jnt_range[j, 0] if model.jnt_limited[j] else -np.pi for j in jids])
        hi = np.array([model.jnt_range[j, 1] if model.jnt_limited[j] else np.pi for j in jids])
        return lo, hi

    # --- rendering --------------------------------------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        return [self.model.camera(i).name for i in range(self.model.ncam)]

    def render(self, camera: str, height: int, width: int) -> tuple[np.ndarray, int]:
        """RGB image of `camera` at the current tick, rendered in the calling thread, cached per tick."""
        return self.renders.render(camera, height, width)

    def close(self) -> None:
        self.renders.close()
