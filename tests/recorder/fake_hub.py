"""A minimal stand-in for the Hugging Face hub's HTTP API, a real HTTP server that huggingface-hub talks to.

Uploads: create_repo, preupload (every file "regular", i.e. sent inside the commit), create_commit and create_tag;
it keeps what was committed (`files`, `commits`, `tags`).
Model repos to download from (`add_model`): repo info with the file listing (`/api/models/R[/revision/REV]`),
the tree listing, and file HEAD/GET (`/R/resolve/REV/PATH`, with Range) by branch or commit; gated repos refuse
file requests without a token; the hub's X-Error-Code headers for unknown repos, revisions and files. Every file
body sent is logged in `downloads` as (repo, commit, path), so tests can assert exactly what was fetched.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.commits: list[str] = []
        self.tags: list[str] = []
        self.models: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> {path: bytes}
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch -> commit
        self.gated: set[str] = set()
        self.downloads: list[tuple[str, str, str]] = []  # (repo, commit, path) of every file body sent
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_model(self, repo: str, files: dict[str, bytes], *, branch: str | None = "main", commit: str | None = None,
                  gated: bool = False) -> str:
        """A model repo commit holding `files`; `branch` (if any) points at it. Returns the commit id."""
        key = repr((repo, sorted(files), len(self.models.get(repo, {}))))
        commit = commit or hashlib.sha1(key.encode()).hexdigest()
        self.models.setdefault(repo, {})[commit] = dict(files)
        if branch:
            self.refs.setdefault(repo, {})[branch] = commit
        if gated:
            self.gated.add(repo)
        return commit

    def downloaded(self, repo: str) -> list[str]:
        return [path for r, _, path in self.downloads if r == repo]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _commit(self, repo: str, rev: str) -> str | None:
        if rev in self.models.get(repo, {}):
            return rev
        return self.refs.get(repo, {}).get(rev)


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

        def _error(self, code: int, error_code: str, head: bool = False) -> None:
            body = b"" if head else json.dumps({"error": error_code}).encode()
            self.send_response(code)
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", error_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _model(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/api/models/"):
                parts = path[len("/api/models/"):].split("/")
                repo, rest = "/".join(parts[:2]), parts[2:]
                if repo not in hub.models:
                    return self._error(404 if repo not in hub.gated else 401, "RepoNotFound", head)
                rev = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
                commit = hub._commit(repo, rev)
                if commit is None:
                    return self._error(404, "RevisionNotFound", head)
                files = hub.models[repo][commit]
                if rest and rest[0] == "tree":
                    return self._send(200, [{"type": "file", "path": p, "size": len(b),
                                             "oid": hashlib.sha1(b).hexdigest()} for p, b in sorted(files.items())])
                return self._send(200, {"id": repo, "modelId": repo, "sha": commit, "private": False,
                                        "gated": "auto" if repo in hub.gated else False,
                                        "siblings": [{"rfilename": p, "size": len(b),
                                                      "blobId": hashlib.sha1(b).hexdigest()}
                                                     for p, b in sorted(files.items())]})
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._send(404, {"error": f"fake hub: no {self.command} {self.path}"})
            repo, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo not in hub.models:
                return self._error(404, "RepoNotFound", head)
            if repo in hub.gated and not self.headers.get("Authorization"):
                return self._error(401, "GatedRepo", head)
            commit = hub._commit(repo, rev)
            if commit is None:
                return self._error(404, "RevisionNotFound", head)
            if file not in hub.models[repo][commit]:
                return self._error(404, "EntryNotFound", head)
            body = hub.models[repo][commit][file]
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and rng[6:].split("-")[0]:
                start = int(rng[6:].split("-")[0])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not head:
                hub.downloads.append((repo, commit, file))
                self.wfile.write(body[start:])

        def do_GET(self):  # noqa: N802
            self._model(head=False)

        def do_HEAD(self):  # noqa: N802
            self._model(head=True)

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
