"""What the control side needs from a policy: one observation in, one action chunk (rig units) out -- a
`ChunkPolicy`, asked with a `ChunkRequest`, answering a `ChunkReply` (both serving.chunks).

`PolicySource` (workbench.deploy.policy_source) asks a `ChunkPolicy` from its own inference thread, never from the
control thread. Implementations:
- `RemotePolicy` (serving.client): a websocket client of `workbench serve` (openpi's protocol), local or on a GPU
  box; `LocalPolicyServer` (workbench.deploy.policy_launcher) starts that server as a child process on loopback (the
  app's default), so a CUDA error, an OOM or a slow first call cannot stall the 50 Hz loop or crash the window;
- `InProcessPolicy` (here): anything with the runtime's `infer` signature, called directly (tests, benchmarks).

Request fields beyond openpi's (state, images, prompt) are optional on the wire: `step`, `action_prefix`,
`inference_delay`, `noise_seed`; an unmodified openpi client simply does not send them.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from serving.chunks import ChunkReply, ChunkRequest


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


__all__ = ["ChunkPolicy", "InProcessPolicy"]
