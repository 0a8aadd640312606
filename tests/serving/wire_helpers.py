"""Raw wire access for server tests: openpi's unmodified client (openpi-client, installed for tests) and its
connection, to send messages as they are (malformed ones included) and read the decoded reply."""
from __future__ import annotations

import warnings
from typing import Any

from serving.protocol import unpackb


def openpi_client(port: int | None, api_key: str | None = None, host: str = "127.0.0.1") -> Any:
    """openpi's client of 127.0.0.1:port (or of the URL `host`, e.g. wss://..., with port None)."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    with warnings.catch_warnings():  # openpi's client opens its connection without `with` (websockets deprecates that)
        warnings.filterwarnings("ignore", "connect\\(\\) must be used as a context manager", DeprecationWarning)
        return WebsocketClientPolicy(host=host, port=port, api_key=api_key)


def send_raw(client: Any, data: bytes | str, timeout: float = 30.0) -> dict[str, Any]:
    """Sends one message as is over an openpi client's connection; -> the decoded reply (error replies included)."""
    client._ws.send(data)
    return unpackb(client._ws.recv(timeout=timeout))


def close(client: Any) -> None:
    client._ws.close()
