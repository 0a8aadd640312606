"""A minimal stand-in for the Hugging Face hub's HTTP API, enough for create_repo, preupload (every file
"regular", i.e. sent inside the commit), create_commit and create_tag; it keeps what was committed."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.commits: list[str] = []
        self.tags: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._send(404, {"error": f"fake hub: no GET {self.path}"})

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            host = f"http://{self.headers['Host']}"
            if self.path == "/api/repos/create":
                d = json.loads(body)
                name = d["name"] if "/" in d["name"] else f"{d.get('organization')}/{d['name']}"
                return self._send(200, {"url": f"{host}/datasets/{name}"})
            if "/preupload/" in self.path:
                files = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            if "/commit/" in self.path:
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        hub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "header":
                        hub.commits.append(item["value"]["summary"])
                repo = self.path.split("/api/datasets/", 1)[1].split("/commit/", 1)[0]
                oid = f"{len(hub.commits):040x}"
                return self._send(200, {"commitUrl": f"{host}/datasets/{repo}/commit/{oid}", "commitOid": oid})
            if "/tag/" in self.path:
                hub.tags.append(json.loads(body)["tag"])
                return self._send(200, {})
            self._send(404, {"error": f"fake hub: no POST {self.path}"})

    return Handler
