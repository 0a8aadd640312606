"""One call builds the whole simulated rig: world, clock, two followers, two scripted leaders, cameras."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from drivers.arm import SIDES
from drivers.cameras.base import ALOHA_CAMERAS
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from drivers.sim.aloha_sim import AlohaSim
from drivers.sim.scripted_leader import ScriptedDemo, ScriptedLeader
from drivers.sim.sim_arm import SimArm
from drivers.sim.sim_camera import DEFAULT_IMAGE_SIZE, SimCamera
from drivers.sim.sim_clock import SimClock


@dataclass
class SimRig:
    sim: AlohaSim
    clock: SimClock
    followers: dict[str, SimArm]
    leaders: dict[str, ScriptedLeader]
    cameras: dict[str, SimCamera]
    demo: ScriptedDemo

    @property
    def arms(self) -> list:
        return [*self.leaders.values(), *self.followers.values()]

    def connect(self) -> None:
        for dev in [*self.arms, *self.cameras.values()]:
            dev.connect()

    def reset(self, seed: int | None = None) -> None:
        """New episode: re-draw the objects from `seed` and plan the leaders' demonstration for it."""
        self.sim.reset(seed)
        self.demo.plan()

    def close(self) -> None:
        for dev in [*self.arms, *self.cameras.values()]:
            dev.disconnect()
        self.sim.close()


def build_sim_rig(task: str = "transfer_cube", seed: int | None = 0,
                  camera_names: Iterable[str] = ALOHA_CAMERAS,
                  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, realtime: bool = False,
                  render_quality: str = "fast", gripper: GripperConstants = GRIPPER_PRESETS["aloha1"],
                  connect: bool = True) -> SimRig:
    """image_size is (height, width). camera_names are ALOHA names (cam_high, cam_low, cam_left_wrist,
    cam_right_wrist; see sim_camera.CAMERA_MAP) or MuJoCo camera names; pass () for no cameras."""
    sim = AlohaSim(task, seed=seed, render_quality=render_quality)
    demo = ScriptedDemo(sim, gripper=gripper)
    rig = SimRig(
        sim=sim,
        clock=SimClock(sim, realtime=realtime),
        followers={s: SimArm(sim, s, gripper=gripper) for s in SIDES},
        leaders={s: ScriptedLeader(demo, s) for s in SIDES},
        cameras={n: SimCamera(sim, n, image_size) for n in camera_names},
        demo=demo,
    )
    if connect:
        rig.connect()
    return rig
