"""Where gym-aloha's MuJoCo XML/STL assets live. We use the installed package only as an asset store."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from drivers.errors import DriverError


def assets_dir() -> Path:
    """The `gym_aloha/assets` folder, found without importing gym_aloha (its import pulls in dm_control/gym)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise DriverError("the simulated rig needs gym-aloha's model files: `pip install gym-aloha`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (folder / "scene.xml").is_file():
        raise DriverError(f"gym-aloha is installed but {folder} has no scene.xml; reinstall gym-aloha")
    return folder


def asset_path(name: str) -> Path:
    path = assets_dir() / name
    if not path.is_file():
        raise DriverError(f"gym-aloha asset {name} not found in {path.parent}")
    return path
