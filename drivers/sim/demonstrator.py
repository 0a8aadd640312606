"""Scripted demonstrations (ACT's approach): end-effector waypoints -> joint trajectory -> leader targets.

1. Waypoints for each gripper (position, orientation, opening) are written relative to the episode's initial
   object poses and interpolated linearly per tick.
2. They drive the mocap bodies of gym-aloha's end-effector model (`bimanual_viperx_end_effector_*.xml`, grippers
   welded to mocap bodies), started from the same object poses as the joint-controlled world.
3. The joint angles that model goes through, with the commanded (normalized) gripper opening, are the joint
   trajectory a leader replays; a follower commanded with it each tick reproduces the manipulation.

Every tick of a trajectory carries a phase label (for segment annotations); the phase names are in PHASES.

Takeover (`plan_takeover`): the same scripts, resumed from a mid-episode world state (an operator taking over
from a policy). The end-effector model starts from the world's current joint and object positions; the task's
progress is read from the contacts of that state (which gripper touches the object, whether it is off the table,
whether that gripper is commanded closed) and picks the script tick to resume at (`resume_tick`: e.g. the cube
already held and lifted by the right gripper -> resume at "lift toward the meeting point"); the grippers move
from where they are to the script's pose at that tick over a transition sized by the distance, then the rest of
the script follows (object-relative waypoints use the objects' *current* poses). The joint trajectory starts
exactly at the given commanded pose and blends into the rollout over TAKEOVER_BLEND_TICKS (no jump).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import mujoco
import numpy as np

from drivers.arm import ARM_JOINTS, GRIPPER_RANGE, SIDES, START_POSE
from drivers.errors import DriverError
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from drivers.sim.aloha_sim import (ARM_START_QPOS, TaskSpec, arm_index, contact_pairs, make_reward_fn, step_tick,
                                   substeps_per_tick, task_spec)
from drivers.sim.assets import asset_path

PHASES: dict[str, tuple[str, ...]] = {
    "transfer_cube": ("approach the cube", "grasp the cube", "hand over", "release"),
    "insertion": ("approach", "grasp peg and socket", "lift", "insert"),
}
STARTUP_PHASE = "start-up"  # leader before its demonstration starts (start pose, then the squeeze)
DONE_PHASE = "done"  # leader after the last tick of its demonstration (holds the final pose)


@dataclass(frozen=True)
class Waypoint:
    t: int  # tick from the start of the demonstration
    xyz: np.ndarray  # gripper_link position in the world (m)
    quat: np.ndarray  # gripper_link orientation (w x y z)
    gripper: float  # normalized opening (0 closed, 1 open)


@dataclass(frozen=True)
class EEScript:
    left: tuple[Waypoint, ...]
    right: tuple[Waypoint, ...]
    phases: tuple[tuple[str, int], ...]  # (name, first tick), in order
    ticks: int


@dataclass
class JointTrajectory:
    """Leader targets per tick, ALOHA space: (T, 14) = [left 6 joints, left gripper, right 6, right gripper]."""

    task: str
    targets: np.ndarray
    phases: tuple[str, ...]  # (T,) phase label per tick
    object_poses: dict[str, np.ndarray] = field(default_factory=dict)
    ee_max_reward: int = 0  # highest reward the end-effector rollout itself reached (diagnostic)

    def __len__(self) -> int:
        return len(self.targets)

    def side(self, side: str) -> np.ndarray:
        k = SIDES.index(side)
        return self.targets[:, 7 * k:7 * k + 7]

    def target(self, side: str, step: int) -> np.ndarray:
        """Target at `step`, clamped into the trajectory (before: first, after: last)."""
        return self.side(side)[min(max(step, 0), len(self) - 1)].copy()

    def phase_at(self, step: int) -> str:
        if step < 0:
            return STARTUP_PHASE
        if step >= len(self):
            return DONE_PHASE
        return self.phases[step]

    def max_step(self) -> float:
        """Largest per-tick change of any joint (rad) or gripper (normalized): what a step clamp must allow."""
        return float(np.max(np.abs(np.diff(self.targets, axis=0)))) if len(self) > 1 else 0.0


# --- quaternion helpers ---------------------------------------------------------------------------------------
def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, np.asarray(a, float), np.asarray(b, float))
    return out


def _quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]], float)


def _axis_angle(axis, degrees: float) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_axisAngle2Quat(out, np.asarray(axis, float), np.deg2rad(degrees))
    return out


def interpolate(waypoints: tuple[Waypoint, ...], t: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear interpolation between the waypoints around tick t (quaternion: normalized lerp)."""
    if t <= waypoints[0].t:
        w = waypoints[0]
        return w.xyz.copy(), w.quat.copy(), w.gripper
    for a, b in zip(waypoints, waypoints[1:]):
        if a.t <= t < b.t:
            f = (t - a.t) / (b.t - a.t)
            quat = (1 - f) * a.quat + f * b.quat
            return (1 - f) * a.xyz + f * b.xyz, quat / np.linalg.norm(quat), (1 - f) * a.gripper + f * b.gripper
    w = waypoints[-1]
    return w.xyz.copy(), w.quat.copy(), w.gripper


def _wp(t: int, xyz, quat, gripper: float) -> Waypoint:
    return Waypoint(t, np.asarray(xyz, float), np.asarray(quat, float), float(gripper))


# --- the scripts ----------------------------------------------------------------------------------------------
def script_transfer_cube(objects: dict[str, np.ndarray], init_left: np.ndarray, init_right: np.ndarray,
                         ticks: int = 400) -> EEScript:
    """Right gripper picks the cube (tilted 60 deg down), carries it to a meeting point in the middle, the left
    gripper (rolled 90 deg) closes on it, then the right opens and both retreat. Waypoints and timing are ACT's;
    positions are grasp points (mocap bodies, see _ee_model); the first waypoint is the grippers' start pose and
    orientations are absolute (ACT's upright mocap frame = quat 1 0 0 0)."""
    box = objects["red_box_joint"][:3]
    pick = _axis_angle([0, 1, 0], -60)  # tilted down 60 deg from the upright mocap frame
    meet_left = _axis_angle([1, 0, 0], 90)
    meet = np.array([0.0, 0.5, 0.25])
    upright = np.array([1.0, 0, 0, 0])
    left = (
        _wp(0, init_left[:3], init_left[3:], 0),
        _wp(100, meet + [-0.1, 0, -0.02], meet_left, 1),  # wait beside the meeting point, open
        _wp(260, meet + [0.02, 0, -0.02], meet_left, 1),  # move onto the cube
        _wp(310, meet + [0.02, 0, -0.02], meet_left, 0),  # close on it
        _wp(360, meet + [-0.1, 0, -0.02], upright, 0),  # pull it away
        _wp(ticks, meet + [-0.1, 0, -0.02], upright, 0),
    )
    right = (
        _wp(0, init_right[:3], init_right[3:], 0),
        _wp(90, box + [0, 0, 0.08], pick, 1),  # above the cube, open
        _wp(130, box + [0, 0, -0.015], pick, 1),  # down around it
        _wp(170, box + [0, 0, -0.015], pick, 0),  # close
        _wp(200, meet + [0.05, 0, 0], pick, 0),  # lift toward the meeting point
        _wp(220, meet, pick, 0),  # at the meeting point
        _wp(310, meet, pick, 1),  # open while the left closes
        _wp(360, meet + [0.1, 0, 0], pick, 1),  # retreat
        _wp(ticks, meet + [0.1, 0, 0], pick, 1),
    )
    names = PHASES["transfer_cube"]
    return EEScript(left, right, ((names[0], 0), (names[1], 130), (names[2], 170), (names[3], 310)), ticks)


def script_insertion(objects: dict[str, np.ndarray], init_left: np.ndarray, init_right: np.ndarray,
                     ticks: int = 400, lift_right: float = 0.02, insert_x: float = 0.035) -> EEScript:
    """Left gripper picks the socket, right gripper the peg; both lift to a meeting point and the peg is pushed
    into the socket. Waypoints and timing are ACT's, except two numbers that make it work in replay (ACT's
    values succeeded on ~10 % of seeds here): the right gripper meets 2 cm higher (ACT: 0.7 cm; the peg is
    grasped 1 cm above its centre, the socket at its centre, and the follower sags a little), and the grippers
    stop 3.5 cm from the middle (ACT: 5 cm, where the peg's tip stops ~2 cm short of the pin). Robust region
    measured: lift 1.8-2.2 cm x stop 3-3.5 cm all succeed on 30 seeds."""
    peg = objects["red_peg_joint"][:3]
    socket = objects["blue_socket_joint"][:3]
    pick_right = _axis_angle([0, 1, 0], -60)
    pick_left = _axis_angle([0, 1, 0], 60)
    meet = np.array([0.0, 0.5, 0.15])
    left = (
        _wp(0, init_left[:3], init_left[3:], 0),
        _wp(120, socket + [0, 0, 0.08], pick_left, 1),
        _wp(170, socket + [0, 0, -0.03], pick_left, 1),
        _wp(220, socket + [0, 0, -0.03], pick_left, 0),
        _wp(285, meet + [-0.1, 0, 0], pick_left, 0),
        _wp(340, meet + [-insert_x, 0, 0], pick_left, 0),
        _wp(ticks, meet + [-insert_x, 0, 0], pick_left, 0),
    )
    right = (
        _wp(0, init_right[:3], init_right[3:], 0),
        _wp(120, peg + [0, 0, 0.08], pick_right, 1),
        _wp(170, peg + [0, 0, -0.03], pick_right, 1),
        _wp(220, peg + [0, 0, -0.03], pick_right, 0),
        _wp(285, meet + [0.1, 0, lift_right], pick_right, 0),
        _wp(340, meet + [insert_x, 0, lift_right], pick_right, 0),
        _wp(ticks, meet + [insert_x, 0, lift_right], pick_right, 0),
    )
    names = PHASES["insertion"]
    return EEScript(left, right, ((names[0], 0), (names[1], 170), (names[2], 220), (names[3], 285)), ticks)


SCRIPTS = {"transfer_cube": script_transfer_cube, "insertion": script_insertion}


# --- end-effector rollout -------------------------------------------------------------------------------------
# The end-effector model is a planning tool, tuned so the grippers follow the waypoints closely: stiffer welds,
# no joint friction (gym-aloha's 30-60 N m frictionloss makes the soft welds lag by ~10 cm), and a little joint
# damping, which picks the slowest joint motion near the wrist singularity (forearm_roll and wrist_rotate
# otherwise spin against each other, up to 0.3 rad per tick). The joint-controlled world is left as gym-aloha.
EE_WELD_SOLREF = (0.02, 1.0)
EE_WELD_SOLIMP = (0.9, 0.95, 0.001, 0.5, 2.0)
EE_JOINT_DAMPING = 1.0  # N m s / rad


@lru_cache(maxsize=None)
def _ee_model(task_name: str) -> mujoco.MjModel:
    """gym-aloha's mocap model, tuned for planning (see above).

    Its welds keep the relative pose of mocap body and gripper_link from the reference pose qpos0, which puts
    each mocap body 13.5 cm ahead of its gripper_link, between the fingers: waypoints are grasp points.
    """
    model = mujoco.MjModel.from_xml_path(str(asset_path(task_spec(task_name).ee_xml)))
    for i in range(model.neq):
        if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            model.eq_solref[i] = EE_WELD_SOLREF
            model.eq_solimp[i] = EE_WELD_SOLIMP
    for s in SIDES:
        for j in ARM_JOINTS:
            dof = model.joint(f"vx300s_{s}/{j}").dofadr[0]
            model.dof_frictionloss[dof] = 0.0
            model.dof_damping[dof] = EE_JOINT_DAMPING
    return model


class EndEffectorSim:
    """gym-aloha's mocap model: grippers follow mocap targets through weld constraints."""

    def __init__(self, task: TaskSpec, gripper: GripperConstants = GRIPPER_PRESETS["aloha1"]):
        self.task = task
        self.gripper = gripper
        self.model = _ee_model(task.name)
        self.data = mujoco.MjData(self.model)
        self.substeps = substeps_per_tick(self.model)
        self.arms = {s: arm_index(self.model, s) for s in SIDES}
        self.mocap = {s: int(self.model.body(f"mocap_{s}").mocapid[0]) for s in SIDES}
        self.reward_fn = make_reward_fn(task, self.model)
        self.weld = {}  # side -> (relpose pos, relpose quat): gripper_link pose in its mocap body's frame
        for i in range(self.model.neq):
            body2 = self.model.body(int(self.model.eq_obj2id[i])).name
            for s in SIDES:
                if body2 == f"vx300s_{s}/gripper_link":
                    self.weld[s] = (self.model.eq_data[i, 3:6].copy(), self.model.eq_data[i, 6:10].copy())

    def reset(self, objects: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arms at the start pose, grippers commanded closed (as ACT), mocaps on the grippers; returns the
        initial gripper poses (xyz + quat) per side."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for s in SIDES:
            ix = self.arms[s]
            d.qpos[np.concatenate([ix.qpos, ix.finger_qpos])] = ARM_START_QPOS
            closed = self.gripper.follower_finger_close
            d.ctrl[ix.finger_actuators] = [closed, -closed]
        for joint, pose in objects.items():
            adr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, joint)]
            d.qpos[adr:adr + 7] = pose
        return self._hold_grippers()

    def reset_to(self, qpos: np.ndarray, grippers: dict[str, float]) -> dict[str, np.ndarray]:
        """Start from a world state (`qpos` of the joint-controlled model: same joints, same order) at rest,
        grippers commanded to `grippers` (normalized) per side; returns the gripper poses as reset() does."""
        m, d = self.model, self.data
        qpos = np.asarray(qpos, dtype=np.float64)
        if qpos.shape != (m.nq,):
            raise DriverError(f"takeover: world state has {qpos.shape} positions, the planning model {m.nq}")
        mujoco.mj_resetData(m, d)
        d.qpos[:] = qpos
        for s in SIDES:
            finger = self.gripper.normalized_to_follower_finger(grippers[s])
            d.ctrl[self.arms[s].finger_actuators] = [finger, -finger]
        return self._hold_grippers()

    def _hold_grippers(self) -> dict[str, np.ndarray]:
        """Put each mocap body where its weld holds the gripper still; returns those poses per side."""
        m, d = self.model, self.data
        mujoco.mj_kinematics(m, d)
        poses = {}
        for s in SIDES:
            body = m.body(f"vx300s_{s}/gripper_link").id
            rel_pos, rel_quat = self.weld[s]
            quat = _quat_mul(d.xquat[body], _quat_conj(rel_quat))  # mocap pose that holds the gripper still
            rot = np.empty(9)
            mujoco.mju_quat2Mat(rot, quat)
            pos = d.xpos[body] - rot.reshape(3, 3) @ rel_pos
            d.mocap_pos[self.mocap[s]] = pos
            d.mocap_quat[self.mocap[s]] = quat
            poses[s] = np.concatenate([pos, quat])
        mujoco.mj_forward(m, d)
        return poses

    def joints(self) -> np.ndarray:
        """(14,) arm joints per side with the *commanded* normalized gripper (ACT replays the command)."""
        out = np.empty(14)
        for k, s in enumerate(SIDES):
            ix = self.arms[s]
            out[7 * k:7 * k + 6] = self.data.qpos[ix.qpos]
            out[7 * k + 6] = self.gripper.follower_finger_to_normalized(self.data.ctrl[ix.finger_actuators[0]])
        return out

    def act(self, side: str, xyz: np.ndarray, quat: np.ndarray, gripper: float) -> None:
        d, ix = self.data, self.arms[side]
        d.mocap_pos[self.mocap[side]] = xyz
        d.mocap_quat[self.mocap[side]] = quat
        finger = self.gripper.normalized_to_follower_finger(gripper)
        d.ctrl[ix.finger_actuators] = [finger, -finger]

    def step(self) -> int:
        step_tick(self.model, self.data, self.substeps)
        return self.reward_fn(self.data)


def _roll_out(ee: "EndEffectorSim", script, ticks: int) -> tuple[np.ndarray, int]:
    """Drive the end-effector model along a script's waypoints: (joint targets [ticks, 14], best reward)."""
    targets = np.empty((ticks, 14))
    targets[0] = ee.joints()
    best = 0
    for t in range(ticks - 1):
        for s, wps in (("left", script.left), ("right", script.right)):
            xyz, quat, g = interpolate(wps, t)
            ee.act(s, xyz, quat, g)
        best = max(best, ee.step())
        targets[t + 1] = ee.joints()
    return targets, best


def plan_demo(task: str | TaskSpec, objects: dict[str, np.ndarray], ticks: int | None = None,
              gripper: GripperConstants = GRIPPER_PRESETS["aloha1"]) -> JointTrajectory:
    """Roll the task's waypoint script out in the end-effector model from `objects` (the episode's initial
    object poses, see AlohaSim.initial_object_poses) and return the joint trajectory to replay."""
    spec = task if isinstance(task, TaskSpec) else task_spec(task)
    ticks = ticks or spec.episode_ticks
    missing = {o.joint for o in spec.objects} - set(objects)
    if missing:
        raise DriverError(f"plan_demo({spec.name}): object poses missing for {sorted(missing)}")
    ee = EndEffectorSim(spec, gripper)
    init = ee.reset(objects)
    script = SCRIPTS[spec.name](objects, init["left"], init["right"], ticks)
    targets, best = _roll_out(ee, script, ticks)
    targets[0, [6, 13]] = 0.0  # ACT's first target: start pose with the grippers commanded closed
    labels = []
    starts = [start for _, start in script.phases] + [ticks]
    for (name, start), end in zip(script.phases, starts[1:]):
        labels += [name] * (end - start)
    # the replay starts from START_POSE exactly; the EE model's first state may differ by solver noise
    targets[0, 0:6] = START_POSE
    targets[0, 7:13] = START_POSE
    return JointTrajectory(spec.name, targets, tuple(labels[:ticks]),
                           {k: np.asarray(v, float).copy() for k, v in objects.items()}, best)


# --- takeover: resume a script from a mid-episode state ------------------------------------------------------------
TAKEOVER_BLEND_TICKS = 10  # the plan's head blends from the commanded pose into the rollout over these ticks
TAKEOVER_SPEED = 0.004  # m per tick (0.2 m/s) of the transition from the current gripper poses into the script
TAKEOVER_TURN = 0.03  # rad per tick (1.5 rad/s) of that transition
TAKEOVER_TRANSITION = (15, 100)  # ticks: bounds of the transition


@dataclass(frozen=True)
class TaskProgress:
    """What a world state shows of a task's progress, read from its contacts."""

    resume: int  # script tick to resume at
    reason: str


def _touching(model, data, a: str, bs: tuple[str, ...]) -> bool:
    pairs = contact_pairs(model, data)
    ga = model.geom(a).id
    return any(frozenset((ga, model.geom(b).id)) in pairs for b in bs)


def _fingers(side: str) -> tuple[str, ...]:
    return (f"vx300s_{side}/10_left_gripper_finger", f"vx300s_{side}/10_right_gripper_finger")


def resume_tick(task: TaskSpec, model: mujoco.MjModel, data: mujoco.MjData,
                grippers: dict[str, float]) -> TaskProgress:
    """Where to resume the task's script from the state in `data` (contacts must be current: after mj_forward),
    given the commanded normalized grippers. A gripper "holds" an object when a finger touches it, the object is
    off the table and the gripper is commanded closed (< 0.5). Anything not recognised restarts the script (with
    the current object poses), which is right whenever nothing has been grasped yet."""
    closed = {s: grippers[s] < 0.5 for s in SIDES}
    if task.name == "transfer_cube":
        on_table = _touching(model, data, "red_box", ("table",))
        left = _touching(model, data, "red_box", _fingers("left"))
        right = _touching(model, data, "red_box", _fingers("right"))
        if left and not on_table and closed["left"]:
            return TaskProgress(310, "left gripper holds the cube: release and retreat")
        if left and not on_table:
            return TaskProgress(260, "cube at the meeting point, left gripper open on it: close the handover")
        if right and not on_table and closed["right"]:
            return TaskProgress(200, "right gripper holds the cube: carry it to the meeting point")
        if right and closed["right"]:
            return TaskProgress(170, "right gripper closed on the cube on the table: grasp and lift")
        if right:
            return TaskProgress(130, "right gripper open at the cube: go around it and grasp")
        return TaskProgress(0, "nothing grasped: from the start, with the cube where it is now")
    if task.name == "insertion":
        socket = tuple(f"socket-{i}" for i in range(1, 5))
        peg_table = _touching(model, data, "red_peg", ("table",))
        socket_table = any(_touching(model, data, g, ("table",)) for g in socket)
        right = _touching(model, data, "red_peg", _fingers("right"))
        left = any(_touching(model, data, g, _fingers("left")) for g in socket)
        if left and right and closed["left"] and closed["right"] and not peg_table and not socket_table:
            return TaskProgress(285, "peg and socket held and lifted: meet and insert")
        if left and right and closed["left"] and closed["right"]:
            return TaskProgress(220, "grippers closed on peg and socket: lift, meet and insert")
        return TaskProgress(0, "not both grasped: from the start, with the objects where they are now")
    return TaskProgress(0, "unknown task: from the start")


def _aligned(q: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """q or -q, whichever is on ref's side (the normalized lerp of `interpolate` takes the short way)."""
    return q if float(np.dot(q, ref)) >= 0.0 else -q


def resume_script(script: EEScript, resume: int, current: dict[str, np.ndarray],
                  grippers: dict[str, float]) -> EEScript:
    """`script` from tick `resume` on, preceded by a transition from the `current` gripper poses (xyz + quat) and
    commanded `grippers`; returns a script whose tick 0 is the current state."""
    if resume == 0:
        transition = 0
    else:
        need = 0.0
        for s, wps in (("left", script.left), ("right", script.right)):
            xyz, quat, _ = interpolate(wps, resume)
            cur = current[s]
            turn = 2.0 * np.arccos(min(1.0, abs(float(np.dot(quat, cur[3:])))))
            need = max(need, np.linalg.norm(xyz - cur[:3]) / TAKEOVER_SPEED, turn / TAKEOVER_TURN)
        transition = int(np.clip(np.ceil(need), *TAKEOVER_TRANSITION))
    shift = transition - resume
    sides = {}
    for s, wps in (("left", script.left), ("right", script.right)):
        cur = current[s]
        out = [_wp(0, cur[:3], cur[3:], grippers[s])]
        if resume > 0:
            xyz, quat, g = interpolate(wps, resume)
            out.append(_wp(transition, xyz, _aligned(quat, out[-1].quat), g))
        for w in wps:
            if w.t > resume:
                out.append(_wp(w.t + shift, w.xyz, _aligned(w.quat, out[-1].quat), w.gripper))
        sides[s] = tuple(out)
    phases = []
    for name, start in script.phases:
        if start <= resume:
            phases = [(name, 0)]
        else:
            phases.append((name, start + shift))
    return EEScript(sides["left"], sides["right"], tuple(phases), script.ticks + shift)


def plan_takeover(task: str | TaskSpec, qpos: np.ndarray, start: np.ndarray,
                  gripper: GripperConstants = GRIPPER_PRESETS["aloha1"],
                  gripper_goals: dict[str, float] | None = None) -> tuple[JointTrajectory, TaskProgress]:
    """A demonstration that finishes the task from a mid-episode world state.

    `qpos`: the joint-controlled world's positions now (arms, fingers, objects); `start`: (14,) the pose the
    leaders were last commanded with (the followers' positions, ALOHA space); the trajectory's tick 0 is exactly
    `start`. `gripper_goals`: the followers' gripper goals (normalized) when known: a gripper closed on an object
    *reads* open by the object's width (commanding its reading would let the object slip), so whether it holds
    (resume_tick) and the plan's gripper columns start from its goal instead. Returns the trajectory and the
    progress read from the state (see resume_tick)."""
    spec = task if isinstance(task, TaskSpec) else task_spec(task)
    start = np.asarray(start, dtype=np.float64)
    grippers = {s: float(np.clip(start[7 * k + 6] if gripper_goals is None else gripper_goals[s], *GRIPPER_RANGE))
                for k, s in enumerate(SIDES)}
    start = start.copy()
    start[[6, 13]] = grippers["left"], grippers["right"]
    ee = EndEffectorSim(spec, gripper)
    current = ee.reset_to(qpos, grippers)
    mujoco.mj_forward(ee.model, ee.data)  # contacts of the state as it is
    progress = resume_tick(spec, ee.model, ee.data, grippers)
    objects = {o.joint: ee.data.qpos[ee.model.joint(o.joint).qposadr[0]:][:7].copy() for o in spec.objects}
    base = SCRIPTS[spec.name](objects, current["left"], current["right"], spec.episode_ticks)
    script = resume_script(base, progress.resume, current, grippers)
    ticks = script.ticks
    targets, best = _roll_out(ee, script, ticks)
    n = min(TAKEOVER_BLEND_TICKS, ticks)
    targets[:n] += np.outer(1.0 - np.arange(n) / n, start - targets[0])  # tick 0 = start exactly
    labels = []
    starts = [s0 for _, s0 in script.phases] + [ticks]
    for (name, s0), end in zip(script.phases, starts[1:]):
        labels += [name] * (end - s0)
    return (JointTrajectory(spec.name, targets, tuple(labels[:ticks]), objects, best), progress)
