"""A small in-process stand-in for the Hugging Face Hub HTTP API, for offline push tests.

It serves what ``huggingface_hub`` calls for ``create_repo`` + ``upload_folder`` without Xet
(``HF_HUB_DISABLE_XET``): repo create, branch create, README front-matter validation, preupload,
the Git LFS batch API and basic PUT uploads, the ndjson commit; and for ``from_pretrained``: HEAD/GET ``resolve`` and model info.
Writes need ``Authorization: Bearer <token>``. Every request's method, path and headers (lower-case
names) are kept in ``store.requests`` so tests can check what the client sent.

For downloads, :meth:`HubStore.add_repo` serves a repository of given files (siblings listed with
their sizes, as ``model_info(files_metadata=True)`` reads them; revisions by branch or commit). A
gated repository lists its files to anyone but answers 401 (no token) or 403 (a token whose user
has not accepted the licence: not in ``store.granted``) with ``X-Error-Code: GatedRepo`` on
``resolve``, as the Hub does.

``store.kill_during_upload = True`` makes the next LFS PUT read part of the body, then drop the
connection and stop the server, as if the Hub went away mid-upload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".bin")


@dataclass
class Repo:
    private: bool
    gated: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    trees: dict[str, dict[str, dict]] = field(default_factory=dict)  # oid -> path -> entry


@dataclass
class HubStore:
    """State that outlives a server restart (what the real Hub keeps on its side)."""

    token: str
    repos: dict[str, Repo] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    kill_during_upload: bool = False
    granted: set[str] = field(default_factory=set)  # gated repos whose licence the user accepted

    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> None:
        """A repository holding ``files`` (``.safetensors``/``.pth`` as LFS) in one commit."""
        tree = {}
        for path, content in files.items():
            if path.endswith((*LFS_SUFFIXES, ".pth", ".model")):
                oid = hashlib.sha256(content).hexdigest()
                self.blobs[oid] = content
                tree[path] = {"lfs": True, "oid": oid}
            else:
                tree[path] = {"lfs": False, "content": content}
        commit = hashlib.sha1(repo_id.encode() + repr(sorted(tree)).encode()).hexdigest()
        self.repos[repo_id] = Repo(
            private=False, gated=gated, branches={"main": commit}, trees={commit: tree}
        )

    def commit_of(self, repo: Repo, revision: str) -> str | None:
        """A branch's commit, or ``revision`` itself when it is a commit."""
        return repo.branches.get(revision) or (revision if revision in repo.trees else None)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file at ``revision``."""
        repo = self.repos[repo_id]
        tree = repo.trees[repo.branches[revision]]
        return {path: self._content(entry) for path, entry in tree.items()}

    def _content(self, entry: dict) -> bytes:
        return self.blobs[entry["oid"]] if entry["lfs"] else entry["content"]


class FakeHub:
    """Start/stop an HTTP server on 127.0.0.1 over a :class:`HubStore`."""

    def __init__(self, store: HubStore, port: int = 0) -> None:
        self.store = store
        handler = type("Handler", (_Handler,), {"store": store, "hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.down = False  # set when a kill drops an upload: every later request is dropped too
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: HubStore
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict | None = None) -> None:
        payload = json.dumps(data).encode()
        self._send(status, payload, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.store.token}"

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.store.requests.append((self.command, path, headers))
        if self.hub.down:  # gone away (huggingface_hub >= 1 uploads in parallel and retries)
            return self._drop()
        for prefix, handler in self.ROUTES.get(self.command, ()):
            if path.startswith(prefix) or prefix == "*":
                handler(self, path)
                return
        self._error(404, "NotFound", f"no route for {self.command} {path}")

    do_GET = do_HEAD = do_POST = do_PUT = _route

    # --- write API ------------------------------------------------------------------------
    def create_repo(self, path: str) -> None:
        body = json.loads(self._body())
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        if repo_id in self.store.repos:
            return self._json(409, {"error": "repo exists", "url": f"{self.hub.url}/{repo_id}"})
        # huggingface_hub < 2 sends "private": true, 2.x "visibility": "private"
        repo = Repo(private=bool(body.get("private")) or body.get("visibility") == "private")
        repo.trees["0" * 40] = {}
        repo.branches["main"] = "0" * 40
        self.store.repos[repo_id] = repo
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, path: str) -> None:
        """The Hub checks a README's front matter before committing it; here: it must parse."""
        import yaml

        content = json.loads(self._body())["content"]
        try:
            yaml.safe_load(content.split("---")[1])
        except (IndexError, yaml.YAMLError) as exc:
            return self._json(400, {"error": f"invalid YAML front matter: {exc}"})
        self._json(200, {"errors": [], "warnings": []})

    def api_models(self, path: str) -> None:
        """/api/models/{ns}/{name}[/revision/{rev} | /preupload/{rev} | /commit/{rev} | ...]."""
        parts = path[len("/api/models/") :].split("/")
        repo_id, action, rest = "/".join(parts[:2]), (parts[2:3] or [""])[0], "/".join(parts[3:])
        repo = self.store.repos.get(repo_id)
        body = self._body() if self.command in ("POST", "PUT") else b""
        if repo is None or (repo.private and not self._authorized()):
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if self.command in ("POST", "PUT") and not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        if action in ("", "revision"):
            return self._model_info(repo_id, repo, rest or "main")
        if action == "tree":  # huggingface_hub >= 1 lists files through it (snapshot_download)
            return self._tree(repo, rest.split("/", 1)[0])
        if action == "preupload":
            return self._json(200, {"files": [_upload_mode(f) for f in json.loads(body)["files"]]})
        if action == "commit":
            return self._commit(repo_id, repo, rest, body)
        if action == "branch":
            if rest in repo.branches:
                return self._error(409, "Conflict", f"branch {rest} exists")
            repo.branches[rest] = repo.branches["main"]
            return self._json(200, {})
        self._error(404, "NotFound", f"no route for {path}")

    def _model_info(self, repo_id: str, repo: Repo, revision: str) -> None:
        oid = self.store.commit_of(repo, revision)
        if oid is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        tree = repo.trees[oid]
        siblings = [
            {"rfilename": p, "size": len(self.store._content(tree[p]))} for p in sorted(tree)
        ]
        gated = "manual" if repo.gated else False
        info = {"id": repo_id, "sha": oid, "private": repo.private, "gated": gated}
        self._json(200, {**info, "siblings": siblings})

    def _tree(self, repo: Repo, revision: str) -> None:
        """Every file of ``revision`` (as with ``recursive=true``), one page."""
        oid = self.store.commit_of(repo, revision)
        if oid is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entries = []
        for path, entry in sorted(repo.trees[oid].items()):
            content = self.store._content(entry)
            item = {"type": "file", "path": path, "size": len(content), "oid": _git_oid(content)}
            if entry["lfs"]:
                item["lfs"] = {"oid": entry["oid"], "size": len(content), "pointerSize": 134}
            entries.append(item)
        self._json(200, entries)

    def _commit(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        tree = dict(repo.trees[repo.branches[revision]])
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                content = base64.b64decode(value["content"])
                tree[value["path"]] = {"lfs": False, "content": content}
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.store.blobs:
                    return self._error(400, "BadRequest", f"LFS object {value['oid']} missing")
                tree[value["path"]] = {"lfs": True, "oid": value["oid"]}
            elif item["key"] == "deletedFile":
                tree.pop(value["path"], None)
        oid = hashlib.sha1(
            repr(sorted(tree)).encode() + repo.branches[revision].encode()
        ).hexdigest()
        repo.trees[oid] = tree
        repo.branches[revision] = oid
        url = f"{self.hub.url}/{repo_id}/commit/{oid}"
        self._json(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    def lfs_batch(self, path: str) -> None:
        body = json.loads(self._body())
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.store.blobs:
                href = f"{self.hub.url}/_lfs/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, path: str) -> None:
        oid = path.rsplit("/", 1)[1]
        if self.store.kill_during_upload:
            self.store.kill_during_upload = False
            return self._die_mid_body()
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            return self._error(400, "BadRequest", "content does not match its oid")
        self.store.blobs[oid] = content
        self._send(200)

    def _die_mid_body(self) -> None:
        self.hub.down = True
        self.rfile.read(max(int(self.headers.get("Content-Length", 2)) // 2, 1))
        self._drop()
        threading.Thread(target=self.hub.stop, daemon=True).start()

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # --- read API -------------------------------------------------------------------------
    def resolve(self, path: str) -> None:
        """/{ns}/{name}/resolve/{revision}/{file path}."""
        namespace, name, _, revision, *file_parts = path.lstrip("/").split("/")
        repo = self.store.repos.get(f"{namespace}/{name}")
        if repo is None or (repo.private and not self._authorized()):
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = self.store.commit_of(repo, revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        repo_id = f"{namespace}/{name}"
        if repo.gated and not (self._authorized() and repo_id in self.store.granted):
            status = 403 if self._authorized() else 401
            return self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted")
        entry = repo.trees[commit].get("/".join(file_parts))
        if entry is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        content = self.store._content(entry)
        headers = {"X-Repo-Commit": commit, "Content-Type": "application/octet-stream"}
        if entry["lfs"]:
            headers.update(
                {"X-Linked-Etag": f'"{entry["oid"]}"', "X-Linked-Size": str(len(content))}
            )
        headers["ETag"] = f'"{entry["oid"] if entry["lfs"] else _git_oid(content)}"'
        self._send(200, content, headers)

    def _resolve_or_lfs(self, path: str) -> None:
        if path.endswith(".git/info/lfs/objects/batch"):
            return self.lfs_batch(path)
        if "/resolve/" in path:
            return self.resolve(path)
        self._error(404, "NotFound", f"no route for {path}")

    ROUTES = {
        "POST": [
            ("/api/repos/create", create_repo),
            ("/api/validate-yaml", validate_yaml),
            ("/api/models/", api_models),
            ("*", _resolve_or_lfs),
        ],
        "PUT": [("/_lfs/", lfs_put), ("/api/models/", api_models)],
        "GET": [("/api/models/", api_models), ("*", _resolve_or_lfs)],
        "HEAD": [("*", _resolve_or_lfs)],
    }


def _upload_mode(file: dict) -> dict:
    lfs = file["path"].endswith(LFS_SUFFIXES) or file["size"] > 1_000_000
    return {"path": file["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def point_clients_at(monkeypatch, url: str) -> None:
    """huggingface_hub and transformers in this process talk to ``url``, online, without Xet.

    The attributes differ between the supported stacks (huggingface_hub 0.x keeps a copy of the
    URL template in ``file_download``, transformers 4.57 caches the offline flag); each is
    patched where it exists.
    """
    import transformers.utils.hub
    from huggingface_hub import constants, file_download

    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    if hasattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE"):
        monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    if hasattr(transformers.utils.hub, "_is_offline_mode"):
        monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", False)
    reset_sessions()


def reset_sessions() -> None:
    """Drop huggingface_hub's pooled HTTP connections (``reset_sessions`` before 1.0,
    ``close_session`` after), so the next request opens a fresh one."""
    from huggingface_hub import utils

    (getattr(utils, "reset_sessions", None) or utils.close_session)()
