"""Test-wide environment: Qt offscreen, MuJoCo's renderer chosen before any import of mujoco."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "osmesa"
