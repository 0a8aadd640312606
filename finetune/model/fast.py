"""Fixed-shape pi0 inference: static buffers, then optionally torch.compile and/or CUDA-graph capture.

Inference runs as three stages over static tensors (image encoders -> prefix K/V cache -> 10 denoising steps),
so each can be timed on its own (the paper's Table 1 breakdown) and captured as a CUDA graph; replaying the three
graphs back to back is the whole sample. Inputs are copied into the static buffers; nothing is re-allocated.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from finetune.model.pi0 import Observation, Pi0, PrefixCache, random_observation

MODES = ("eager", "compile", "graph", "compile+graph")


class StaticSampler:
    def __init__(self, model: Pi0, batch_size: int = 1, num_steps: int | None = None, mode: str = "eager",
                 warmup: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        device = next(model.parameters()).device
        if "graph" in mode and device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.model, self.mode, self.device = model, mode, device
        cfg = model.config
        self.num_steps = num_steps or cfg.num_steps
        self.obs = random_observation(cfg, batch_size, device)
        self.noise = torch.randn(batch_size, cfg.action_horizon, cfg.action_dim, device=device)

        images: Callable[[], Any] = lambda: model.embed_images(self.obs)  # noqa: E731
        prefill: Callable[[Any], PrefixCache] = lambda img: model.prefill(self.obs, img)  # noqa: E731
        denoise: Callable[[PrefixCache], Tensor] = lambda c: model.denoise(  # noqa: E731
            c, self.obs.state, self.noise, self.num_steps)
        if "compile" in mode:
            opts = dict(mode="max-autotune-no-cudagraphs" if device.type == "cuda" else "default", dynamic=False)
            images, prefill, denoise = (torch.compile(f, **opts) for f in (images, prefill, denoise))
        self._fns = (images, prefill, denoise)
        self.graphs: list[torch.cuda.CUDAGraph] = []
        with torch.inference_mode():
            if "graph" in mode:
                self._capture(warmup)
            else:
                for _ in range(warmup):
                    self._run_eager()

    # stage outputs live in self.img / self.cache / self.actions (static when graphed)
    def _run_eager(self) -> None:
        images, prefill, denoise = self._fns
        self.img = images()
        self.cache = prefill(self.img)
        self.actions = denoise(self.cache)

    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                self._run_eager()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        images, prefill, denoise = self._fns
        pool = None
        g_img, g_pre, g_den = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(g_img, pool=pool):
            self.img = images()
        pool = g_img.pool()
        with torch.cuda.graph(g_pre, pool=pool):
            self.cache = prefill(self.img)
        with torch.cuda.graph(g_den, pool=pool):
            self.actions = denoise(self.cache)
        self.graphs = [g_img, g_pre, g_den]

    # ----- stages (for benchmarks); each reads the previous stage's static output -----
    def run_images(self) -> None:
        if self.graphs:
            self.graphs[0].replay()
        else:
            self.img = self._fns[0]()

    def run_prefill(self) -> None:
        if self.graphs:
            self.graphs[1].replay()
        else:
            self.cache = self._fns[1](self.img)

    def run_denoise(self) -> None:
        if self.graphs:
            self.graphs[2].replay()
        else:
            self.actions = self._fns[2](self.cache)

    def run_all(self) -> Tensor:
        with torch.inference_mode():
            self.run_images()
            self.run_prefill()
            self.run_denoise()
        return self.actions

    def load(self, obs: Observation, noise: Tensor | None = None) -> None:
        """Copies an observation into the static buffers (missing cameras: zero image, mask False)."""
        with torch.inference_mode():
            for name, buf in self.obs.images.items():
                img = obs.images.get(name)
                if img is None:
                    buf.zero_()
                    self.obs.image_masks[name].fill_(False)
                else:
                    buf.copy_(img)
                    m = obs.image_masks.get(name)
                    self.obs.image_masks[name].copy_(m) if m is not None else self.obs.image_masks[name].fill_(True)
            self.obs.tokens.copy_(obs.tokens)
            self.obs.token_mask.copy_(obs.token_mask)
            self.obs.state.copy_(obs.state)
            if noise is None:
                self.noise.normal_()
            else:
                self.noise.copy_(noise)

    def __call__(self, obs: Observation, noise: Tensor | None = None) -> Tensor:
        """-> actions [B, H, action_dim] (a fresh tensor; the static output is reused by the next call)."""
        self.load(obs, noise)
        return self.run_all().clone()
