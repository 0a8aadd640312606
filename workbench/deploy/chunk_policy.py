"""What the control side needs from a policy: one observation in, one action chunk (rig units) out.

`PolicySource` (workbench.deploy.policy_source) asks a `ChunkPolicy` from its own inference thread, never from the
control thread. Implementations:
- `RemotePolicy` (workbench.deploy.policy_launcher): a websocket client of `workbench serve` (openpi's protocol), local
  or on a GPU box; `LocalPolicyServer` starts that server as a child process on loopback (the app's default),
  so a CUDA error, an OOM or a slow first call cannot stall the 50 Hz loop or crash the window;
- `InProcessPolicy` (here): anything with the runtime's `infer` signature, called directly (tests, benchmarks).

Request fields beyond openpi's (state, images, prompt) are optional on the wire: `step`, `action_prefix`,
`inference_delay`, `noise_seed`; an unmodified openpi client simply does not send them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ChunkRequest:
    state: np.ndarray  # (14,) follower joints, rig units, at the observation
    images: Mapping[str, np.ndarray]  # rig camera name -> HxWx3 uint8
    prompt: str
    step: int  # the trial tick index of the observation (a replay policy looks its chunk up by it)
    # Real-time chunking (Black et al. 2025): rig-unit actions the new chunk must continue, aligned so that
    # prefix[i] is the action planned for tick `step + i`; the first `delay` of them execute before the new chunk
    # arrives (frozen), the rest are a soft guide. None: plain sampling.
    prefix: np.ndarray | None = None
    delay: int = 0
    seed: int | None = None


@dataclass(frozen=True)
class ChunkReply:
    actions: np.ndarray  # (H, 14) rig units; actions[i] is meant for tick request.step + i
    infer_ms: float  # the model's time (server side)
    roundtrip_ms: float  # request sent -> reply decoded, as the control side saw it
    timing: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class ChunkPolicy(Protocol):
    metadata: Mapping[str, Any]

    def infer(self, request: ChunkRequest) -> ChunkReply: ...

    def close(self) -> None: ...


class InProcessPolicy:
    """Calls `runtime.infer(state, images, prompt, seed=, prefix=, delay=, step=)` in the calling thread.

    Only for tests and benchmarks: the app serves policies from a separate process (LocalPolicyServer)."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.metadata = dict(runtime.metadata()) if hasattr(runtime, "metadata") else {}

    def infer(self, request: ChunkRequest) -> ChunkReply:
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"seed": request.seed, "step": request.step}
        if request.prefix is not None:
            kwargs.update(prefix=request.prefix, delay=request.delay)
        actions = np.asarray(self.runtime.infer(request.state, request.images, request.prompt, **kwargs),
                             dtype=np.float64)
        ms = (time.perf_counter() - t0) * 1e3
        return ChunkReply(actions, ms, ms)

    def close(self) -> None:
        pass


__all__ = ["ChunkPolicy", "ChunkReply", "ChunkRequest", "InProcessPolicy"]
