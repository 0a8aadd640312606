"""Offscreen rendering for the sim cameras: one mujoco.Renderer per (thread, image size), images cached per tick.

Why this shape:
- A MuJoCo GL context belongs to the thread that made it (EGL cannot make it current elsewhere), so each thread
  that asks for frames (normally only the control loop) gets its own renderers.
- Renderers are never freed while others are alive: mujoco.Renderer.close() frees its GL context *before* its
  MjrContext, so the MjrContext's GL objects get deleted in whatever context is current, corrupting a live
  renderer of the same thread (observed with OSMesa: later frames come back blank). `_safe_close` frees in the
  right order, in the owning thread, at the end.
- Shadows (4096^2 shadow maps of three lights) and 4x multisampling cost ~40-60 ms per image on a CPU
  (OSMesa); "fast" quality turns both off (~5-8 ms at 320x240..640x480). "full" keeps gym-aloha's look.
- Mesa renders with its own LLVM, loaded into the global symbol scope: Triton's LLVM must be in the process first
  or the first `import triton` (torch) crashes. `drivers/sim/__init__.py` sees to it before `mujoco` is imported,
  so it already holds when a renderer is made here; see `drivers.sim.llvm_order`.
"""
from __future__ import annotations

import threading
import time
from typing import ContextManager, Protocol

import mujoco
import numpy as np

from drivers.errors import CameraError

RENDER_QUALITIES = ("fast", "full")
_GRAVEYARD: list[mujoco.Renderer] = []  # renderers of other threads: kept alive, never freed in a wrong context


class Scene(Protocol):
    """What a RenderPool needs of the simulated world (drivers.sim.aloha_sim.AlohaSim is one)."""

    model: mujoco.MjModel
    data: mujoco.MjData
    lock: ContextManager  # held while a frame is rendered: no physics step in between

    @property
    def tick(self) -> int:
        """The world's tick counter (never goes back): a cached image is valid for one tick."""
        ...


def _safe_close(renderer: mujoco.Renderer) -> None:
    gl, mjr = renderer._gl_context, renderer._mjr_context
    if gl is not None:
        gl.make_current()
    if mjr is not None:
        mjr.free()
    if gl is not None:
        gl.free()
    renderer._gl_context = None
    renderer._mjr_context = None


class RenderPool:
    def __init__(self, sim: Scene, quality: str = "fast"):
        if quality not in RENDER_QUALITIES:
            raise ValueError(f"render quality {quality!r}: choose one of {RENDER_QUALITIES}")
        self.sim = sim
        self.quality = quality
        self._renderers: dict[tuple[int, int, int], mujoco.Renderer] = {}
        self._cache: dict[tuple[str, int, int], tuple[int, np.ndarray]] = {}
        self.renders = 0  # images actually rendered (cache misses)
        self.render_s = 0.0  # wall time spent rendering
        vis = sim.model.vis
        if quality == "fast":
            vis.quality.offsamples = 0

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (threading.get_ident(), height, width)
        r = self._renderers.get(key)
        if r is None:
            vis = self.sim.model.vis.global_
            vis.offwidth = max(vis.offwidth, width)
            vis.offheight = max(vis.offheight, height)
            try:
                r = mujoco.Renderer(self.sim.model, height, width)
            except Exception as exc:  # noqa: BLE001 - GL failures come as many types
                raise CameraError(
                    f"cannot create a MuJoCo renderer ({type(exc).__name__}: {exc}). On a machine without a GPU "
                    "set MUJOCO_GL=osmesa (needs libOSMesa, e.g. apt install libosmesa6) before starting; "
                    "with an NVIDIA GPU use MUJOCO_GL=egl."
                ) from exc
            if self.quality == "fast":
                r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._renderers[key] = r
        return r

    def render(self, camera: str, height: int, width: int) -> tuple[np.ndarray, int]:
        """(image, tick): the image of `camera` for the sim's current tick; rendered at most once per tick."""
        sim = self.sim
        with sim.lock:
            key = (camera, height, width)
            hit = self._cache.get(key)
            if hit is not None and hit[0] == sim.tick:
                return hit[1], hit[0]
            r = self._renderer(height, width)
            t0 = time.perf_counter()
            r.update_scene(sim.data, camera=camera)
            image = r.render()  # a fresh array per call: safe to hand out
            self.render_s += time.perf_counter() - t0
            self.renders += 1
            image.flags.writeable = False  # shared between callers of the same tick
            self._cache[key] = (sim.tick, image)
            return image, sim.tick

    def close(self) -> None:
        me = threading.get_ident()
        with self.sim.lock:
            for key, r in list(self._renderers.items()):
                if key[0] == me:
                    _safe_close(r)
                else:
                    _GRAVEYARD.append(r)
            self._renderers.clear()
            self._cache.clear()
