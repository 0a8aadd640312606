"""Does a policy fit a rig? The one comparison behind both rig checks before a policy moves arms:

- the server side: `workbench serve POLICY --rig RIG` (finetune.runtime.check_rig: the policy folder's rig.json);
- the robot side: workbench.deploy.policy_launcher.open_policy checks the metadata the server announces (its
  `cameras`, `joint_names`, `control_hz`, `backend`, `gripper`), for a child server and a remote `ws://` one alike.

Compared: camera names (none missing, none extra), joint layout, control rate (a chunk is a trajectory sampled at
the training rate: played at another rate every motion runs faster or slower), backend kind (a policy trained on
simulated data -- backend "sim" or "virtual" -- on a rig that drives real arms, "dynamixel": refused unless the
operator allows it, sim-to-real being sometimes intended), gripper constants (the normalized gripper values the
policy learned map to these joint angles). What one side does not say (a rig.json of imported episodes has no
gripper constants and no backend; an older server announces no joint names) is reported as not checked, never
passed silently: `RigCheck.summary()` is one line naming what was checked and what was not. A policy trained
elsewhere (finetune.foreign_policy: a LeRobot or openpi checkpoint) says only the cameras it reads
(`camera_subset`: others on the rig are noted, not refused) and its joint count (compared without names).

Torch-free: the robot side imports it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Mapping

from drivers.arm import BIMANUAL_JOINT_NAMES

GRIPPER_TOL = 1e-6
HZ_TOL = 1e-6
REAL_BACKENDS = ("dynamixel",)
SIMULATED_BACKENDS = ("sim", "virtual")
ALLOW_SIM_FLAG = "--allow-sim-policy"


@dataclass(frozen=True)
class RigDescription:
    """What a policy needs to match: camera names, joint layout, gripper constants, control rate, backend kind
    (None: unknown, not checked)."""

    cameras: tuple[str, ...]
    joint_names: tuple[str, ...] | None = None
    gripper: Mapping[str, float] | None = None
    control_hz: float | None = None
    backend: str | None = None  # "sim" | "virtual" | "dynamixel"
    name: str | None = None
    # a policy trained elsewhere (finetune.foreign_policy): the joint count without names is known, and `cameras`
    # are only those it reads (the rig may have more, which it ignores)
    joint_count: int | None = None
    camera_subset: bool = False

    def __post_init__(self) -> None:
        if self.joint_count is None and self.joint_names is not None:
            object.__setattr__(self, "joint_count", len(self.joint_names))

    @staticmethod
    def of(rig: Any) -> "RigDescription":
        """From a RigDescription, a workbench RigConfig, a RigSnapshot, a rig.json-like mapping or the metadata map
        a policy server announces (its "rig" is the rig's name)."""
        if isinstance(rig, RigDescription):
            return rig
        get = (lambda k: rig.get(k)) if isinstance(rig, Mapping) else (lambda k: getattr(rig, k, None))
        cams = tuple(c if isinstance(c, str) else c.name for c in (get("cameras") or ()))
        joints = get("joint_names")
        if joints is None and get("arms") is not None:  # a RigConfig: ALOHA's two 7-joint follower arms
            joints = BIMANUAL_JOINT_NAMES
        gripper = get("gripper")
        if gripper is not None and is_dataclass(gripper):
            gripper = asdict(gripper)
        try:
            gripper = {str(k): float(v) for k, v in dict(gripper).items()} if gripper is not None else None
        except (TypeError, ValueError):  # a malformed announcement: unknown, reported as not checked
            gripper = None
        hz = get("control_hz")
        backend = get("backend")
        name = get("name")
        if not isinstance(name, str):
            name = get("rig") if isinstance(get("rig"), str) else None
        count = get("joint_count")
        return RigDescription(cams, tuple(str(j) for j in joints) if joints is not None else None,
                              gripper,
                              float(hz) if isinstance(hz, (int, float)) and not isinstance(hz, bool) and hz > 0
                              else None,
                              str(backend) if backend and backend != "unknown" else None, name,
                              int(count) if isinstance(count, int) and not isinstance(count, bool) else None,
                              get("camera_subset") is True)


@dataclass
class RigCheck:
    """The outcome of one comparison: `differences` (non-empty: refuse), `checked` / `unchecked` (with why) and
    `notes` (allowed but worth saying: a sim-trained policy on real arms)."""

    policy: str
    rig: str
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        """One line: what was checked, what could not be, and the verdict."""
        verdict = "MISMATCH" if self.differences else "OK"
        out = f"rig check {verdict} ({self.policy} vs rig {self.rig!r}): checked {', '.join(self.checked) or 'nothing'}"
        if self.unchecked:
            out += f"; NOT checked: {'; '.join(self.unchecked)}"
        if self.notes:
            out += f"; note: {'; '.join(self.notes)}"
        if self.differences:
            out += f"; {len(self.differences)} difference(s): {'; '.join(self.differences)}"
        return out


def _unknown(trained: Any, rig: Any) -> str:
    if trained is None and rig is None:
        return "unknown for both the policy and the rig"
    return "unknown for the policy" if trained is None else "unknown for the rig"


def compare_rigs(trained: Any, rig: Any, *, allow_sim_policy: bool | None = False, policy: str = "policy",
                 ) -> RigCheck:
    """Compares the rig a policy was trained for with the given rig (anything RigDescription.of takes).

    allow_sim_policy: a policy trained on a simulated backend on a real ("dynamixel") rig is refused when False,
    allowed with a note when True; None (the server side, which moves no arms) notes it and leaves the refusal to
    the robot side."""
    t, r = RigDescription.of(trained), RigDescription.of(rig)
    check = RigCheck(policy=policy, rig=r.name or "?")
    # cameras
    missing = [c for c in t.cameras if c not in r.cameras]
    extra = [c for c in r.cameras if c not in t.cameras]
    check.checked.append(f"cameras {list(t.cameras)}" + (" (the ones the policy reads)" if t.camera_subset else ""))
    if t.camera_subset:  # a foreign policy: rig cameras it does not read are fine, missing ones are not
        if missing:
            check.differences.append(f"cameras: the policy reads {list(t.cameras)}, rig has {list(r.cameras)} "
                                     f"(missing {missing})")
        if extra:
            check.notes.append(f"rig cameras {extra} are not read by the policy")
    elif missing or extra:
        check.differences.append(
            f"cameras: policy trained on {list(t.cameras)}, rig has {list(r.cameras)}"
            + (f" (missing {missing})" if missing else "") + (f" (not in training {extra})" if extra else ""))
    # joint layout
    if t.joint_names is not None and r.joint_names is not None:
        check.checked.append(f"joint layout ({len(t.joint_names)} joints)")
        if tuple(t.joint_names) != tuple(r.joint_names):
            check.differences.append(f"joint layout: policy {list(t.joint_names)}, rig {list(r.joint_names)}")
    elif t.joint_count is not None and r.joint_count is not None:  # the count is known, the names are not
        check.checked.append(f"joint count ({t.joint_count})")
        if t.joint_count != r.joint_count:
            check.differences.append(f"joint count: policy {t.joint_count}, rig {r.joint_count}")
        check.unchecked.append(f"joint names ({_unknown(t.joint_names, r.joint_names)})")
    else:
        check.unchecked.append(f"joint layout ({_unknown(t.joint_names, r.joint_names)})")
    # control rate
    if t.control_hz is not None and r.control_hz is not None:
        check.checked.append(f"control rate ({t.control_hz:g} Hz)")
        if abs(t.control_hz - r.control_hz) > HZ_TOL * max(1.0, r.control_hz):
            check.differences.append(
                f"control rate: policy trained at {t.control_hz:g} Hz, rig runs at {r.control_hz:g} Hz (an action "
                f"chunk is a trajectory at the training rate; at {r.control_hz:g} Hz it would play "
                f"{r.control_hz / t.control_hz:.3g}x as fast)")
    else:
        check.unchecked.append(f"control rate ({_unknown(t.control_hz, r.control_hz)})")
    # backend kind
    if t.backend is not None and r.backend is not None:
        check.checked.append(f"backend ({t.backend} -> {r.backend})")
        if t.backend in SIMULATED_BACKENDS and r.backend in REAL_BACKENDS:
            what = (f"backend: policy trained on the simulated {t.backend!r} backend, this rig drives real arms "
                    f"({r.backend!r})")
            if allow_sim_policy is True:
                check.notes.append(f"{what}: allowed by {ALLOW_SIM_FLAG}")
            elif allow_sim_policy is None:
                check.notes.append(f"{what}: the robot side refuses it unless {ALLOW_SIM_FLAG}")
            else:
                check.differences.append(f"{what}; sim-to-real is sometimes intended: pass {ALLOW_SIM_FLAG} "
                                         "(open_policy(..., allow_sim_policy=True)) to run it on real arms anyway")
    else:
        check.unchecked.append(f"backend kind ({_unknown(t.backend, r.backend)})")
    # gripper constants
    if t.gripper is not None and r.gripper is not None:
        check.checked.append("gripper constants")
        for k in sorted(set(t.gripper) | set(r.gripper)):
            a, b = t.gripper.get(k), r.gripper.get(k)
            if a is None or b is None or abs(float(a) - float(b)) > GRIPPER_TOL:
                check.differences.append(f"gripper constant {k}: policy {a}, rig {b}")
    else:
        check.unchecked.append(f"gripper constants ({_unknown(t.gripper, r.gripper)})")
    return check


def rig_metadata(snapshot: Any) -> dict[str, Any]:
    """What a server announces about the rig its policy was trained for, beyond `rig`, `control_hz` and `cameras`,
    so that the robot side can check it (compare_rigs): backend kind, gripper constants, joint names."""
    if snapshot is None:
        return {"backend": None, "gripper_set": None, "gripper": None, "joint_names": None}
    return {"backend": snapshot.backend, "gripper_set": snapshot.gripper_set,
            "gripper": dict(snapshot.gripper) if snapshot.gripper is not None else None,
            "joint_names": list(snapshot.joint_names)}


def rig_differences(trained: Any, rig: Any, *, allow_sim_policy: bool | None = False) -> list[str]:
    """Human-readable differences between the rig a policy was trained for and the given rig ([] if none)."""
    return compare_rigs(trained, rig, allow_sim_policy=allow_sim_policy).differences


__all__ = ["ALLOW_SIM_FLAG", "GRIPPER_TOL", "RigCheck", "RigDescription", "compare_rigs", "rig_differences",
           "rig_metadata"]
