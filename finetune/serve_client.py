"""A minimal client for finetune.serve (openpi's websocket + msgpack protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune.serve import packb, unpackb


class ServeError(RuntimeError):
    """The server answered {"error": ...}."""


@dataclass
class ServeClient:
    """Connects on construction and reads the server's metadata; `infer(obs)` -> the reply map."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    timeout: float = 30.0
    metadata: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        self._ws = connect(f"ws://{self.host}:{self.port}", additional_headers=headers, compression=None,
                           max_size=None, open_timeout=self.timeout).__enter__()  # opened, as `with` would
        self.metadata = unpackb(self._ws.recv(timeout=self.timeout))

    def send_raw(self, data: bytes | str) -> dict[str, Any]:
        """Sends one message as is; -> the decoded reply (errors included)."""
        self._ws.send(data)
        return unpackb(self._ws.recv(timeout=self.timeout))

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        reply = self.send_raw(packb(obs))
        if "error" in reply:
            raise ServeError(reply["error"])
        return reply

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "ServeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ServeClient", "ServeError"]
