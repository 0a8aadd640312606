"""Gripper unit mapping between leader and follower (ALOHA's normalize/unnormalize constants).

The rig configuration chooses a set (or gives its own values); nothing else re-declares these numbers.
At the Arm interface every gripper is *normalized*: 0 = closed, 1 = open (gym-aloha's and ALOHA's recorded unit).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GripperConstants:
    leader_joint_open: float
    leader_joint_close: float
    follower_joint_open: float
    follower_joint_close: float
    leader_finger_open: float
    leader_finger_close: float
    follower_finger_open: float
    follower_finger_close: float
    start_threshold: float  # leader gripper joint (rad) below which "squeeze to start" fires

    @staticmethod
    def _normalize(x, open_, close):
        return (x - close) / (open_ - close)

    @staticmethod
    def _unnormalize(y, open_, close):
        return y * (open_ - close) + close

    def leader_joint_to_normalized(self, x):
        return self._normalize(x, self.leader_joint_open, self.leader_joint_close)

    def normalized_to_leader_joint(self, y):
        return self._unnormalize(y, self.leader_joint_open, self.leader_joint_close)

    def follower_joint_to_normalized(self, x):
        return self._normalize(x, self.follower_joint_open, self.follower_joint_close)

    def normalized_to_follower_joint(self, y):
        return self._unnormalize(y, self.follower_joint_open, self.follower_joint_close)

    def follower_finger_to_normalized(self, x):
        return self._normalize(x, self.follower_finger_open, self.follower_finger_close)

    def normalized_to_follower_finger(self, y):
        return self._unnormalize(y, self.follower_finger_open, self.follower_finger_close)

    @property
    def start_threshold_normalized(self) -> float:
        return float(self.leader_joint_to_normalized(self.start_threshold))


GRIPPER_PRESETS: dict[str, GripperConstants] = {
    # ALOHA 1 / ACT / gym-aloha
    "aloha1": GripperConstants(0.3083, -0.6842, 1.4910, -0.6213, 0.02417, 0.01244, 0.05800, 0.01844, -0.3),
    "mobile_aloha": GripperConstants(-0.8, -1.65, 1.4910, -0.6213, 0.02417, 0.01244, 0.05800, 0.01844, -1.4),
    "aloha2": GripperConstants(0.8298, -0.0552, 1.6214, 0.6197, 0.0323, 0.0185, 0.0579, 0.0440, 0.0),
}
