"""A small in-process stand-in for the Hugging Face Hub HTTP API, for offline push tests.

It serves what ``huggingface_hub`` calls for ``create_repo`` + ``upload_folder`` without Xet
(``HF_HUB_DISABLE_XET``): repo create, branch create, README front-matter validation, preupload,
the Git LFS batch API (an object the store already holds gets no upload action, as on the Hub)
with basic PUT uploads, or multipart ones (``store.part_size``: objects larger than it are sent in
parts of that size, then a completion POST), the ndjson commit; and for ``from_pretrained``:
HEAD/GET ``resolve`` and model info. Writes need ``Authorization: Bearer <token>``. Every request's
method, path and headers (lower-case names) are kept in ``store.requests`` so tests can check what
the client sent.

LFS objects live on disk under ``store.blob_dir`` (one file per sha256, bodies streamed there in
1 MiB pieces and hashed on the way), so a multi-gigabyte push costs the server no memory; an
upload only becomes an object once its whole body arrived and matched its sha256.

For downloads, :meth:`HubStore.add_repo` serves a repository of given files (siblings listed with
their sizes, as ``model_info(files_metadata=True)`` reads them; revisions by branch or commit). A
gated repository lists its files to anyone but answers 401 (no token) or 403 (a token whose user
has not accepted the licence: not in ``store.granted``) with ``X-Error-Code: GatedRepo`` on
``resolve``, as the Hub does.

``store.kill_during_upload = True`` makes the next LFS upload (a PUT, or a part of a multipart
one) read half its body, wait (up to 10 s) for the other objects the last LFS batch asked for to
be stored (so what the store holds at the kill is well defined: ``store.stored``), then drop the
connection and stop the server, as if the Hub went away mid-upload; ``kill_during_upload = OID``
picks the object whose upload is cut.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".bin")
PIECE = 1 << 20  # bytes read from a request body at a time
KILL_WAIT_S = 10  # longest a cut-off upload waits for the others to be stored


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
    blob_dir: Path  # LFS objects, one file named by its sha256
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # oids whose upload completed, in order
    part_size: int | None = None  # multipart uploads for objects larger than this
    kill_during_upload: bool | str = False
    granted: set[str] = field(default_factory=set)  # gated repos whose licence the user accepted
    pending: set[str] = field(default_factory=set)  # the last LFS batch's uploads not yet stored
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.blob_dir = Path(self.blob_dir)
        (self.blob_dir / "incoming").mkdir(parents=True, exist_ok=True)

    def blob(self, oid: str) -> Path:
        return self.blob_dir / oid

    def has_blob(self, oid: str) -> bool:
        return self.blob(oid).is_file()

    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> None:
        """A repository holding ``files`` (``.safetensors``/``.pth`` as LFS) in one commit."""
        tree = {}
        for path, content in files.items():
            if path.endswith((*LFS_SUFFIXES, ".pth", ".model")):
                oid = hashlib.sha256(content).hexdigest()
                self.blob(oid).write_bytes(content)
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
        return {path: self._content(entry) for path, entry in self._tree(repo_id, revision).items()}

    def digests(self, repo_id: str, revision: str = "main") -> dict[str, str]:
        """The sha256 of every file at ``revision``, without reading LFS objects back."""
        return {
            path: entry["oid"] if entry["lfs"] else hashlib.sha256(entry["content"]).hexdigest()
            for path, entry in self._tree(repo_id, revision).items()
        }

    def _tree(self, repo_id: str, revision: str) -> dict[str, dict]:
        repo = self.repos[repo_id]
        return repo.trees[repo.branches[revision]]

    def _content(self, entry: dict) -> bytes:
        return self.blob(entry["oid"]).read_bytes() if entry["lfs"] else entry["content"]

    def _size(self, entry: dict) -> int:
        return self.blob(entry["oid"]).stat().st_size if entry["lfs"] else len(entry["content"])


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
        return b"".join(self._body_pieces())

    def _body_pieces(self, most: int = PIECE) -> Iterator[bytes]:
        """The request body, at most ``most`` bytes at a time (chunked or sized)."""
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                while size:
                    piece = self.rfile.read(min(size, most))
                    if not piece:
                        return
                    size -= len(piece)
                    yield piece
                self.rfile.readline()
            self.rfile.readline()
            return
        left = int(self.headers.get("Content-Length", 0))
        while left:
            piece = self.rfile.read(min(left, most))
            if not piece:
                return  # the client went away
            left -= len(piece)
            yield piece

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
        siblings = [{"rfilename": p, "size": self.store._size(tree[p])} for p in sorted(tree)]
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
            size = self.store._size(entry)
            if entry["lfs"]:  # the Hub gives the git oid of the pointer file
                pointer = _lfs_pointer(entry["oid"], size)
                item = {"type": "file", "path": path, "size": size, "oid": _git_oid(pointer)}
                item["lfs"] = {"oid": entry["oid"], "size": size, "pointerSize": len(pointer)}
            else:
                item = {"type": "file", "path": path, "size": size}
                item["oid"] = _git_oid(entry["content"])
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
                if not self.store.has_blob(value["oid"]):
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
            if not self.store.has_blob(obj["oid"]):
                entry["actions"] = {"upload": self._upload_action(obj["oid"], obj["size"])}
            objects.append(entry)
        with self.store.lock:
            self.store.pending = {entry["oid"] for entry in objects if "actions" in entry}
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _upload_action(self, oid: str, size: int) -> dict:
        """A basic PUT, or (``store.part_size``) one PUT per part then a completion POST."""
        part = self.store.part_size
        if not part or size <= part:
            return {"href": f"{self.hub.url}/_lfs/{oid}", "header": {}}
        upload = f"{self.hub.url}/_lfs/{oid}/{uuid.uuid4().hex}"
        parts = {f"{n:05d}": f"{upload}/{n}" for n in range(1, -(-size // part) + 1)}
        return {"href": upload, "header": {"chunk_size": str(part), **parts}}

    def lfs_put(self, path: str) -> None:
        """``/_lfs/{oid}`` (a whole object) or ``/_lfs/{oid}/{upload}/{part}``."""
        oid, *part = path[len("/_lfs/") :].split("/")
        target = self.store.blob_dir / "incoming" / "-".join([oid, *part])
        digest = self._receive(oid, target)
        if digest is None:
            return
        if part:  # S3 answers each part with its ETag, which the completion lists
            return self._send(200, headers={"ETag": f'"{digest}"'})
        self._finish(oid, target, digest)

    def lfs_complete(self, path: str) -> None:
        """``POST /_lfs/{oid}/{upload}``: join the parts the completion lists into the object."""
        oid, upload = path[len("/_lfs/") :].split("/")
        parts = json.loads(self._body())["parts"]
        incoming = self.store.blob_dir / "incoming"
        target = incoming / f"{oid}-{upload}"
        digest = hashlib.sha256()
        with target.open("wb") as out:
            for part in parts:
                piece_path = incoming / f"{oid}-{upload}-{part['partNumber']}"
                with piece_path.open("rb") as piece:
                    while data := piece.read(PIECE):
                        digest.update(data)
                        out.write(data)
                piece_path.unlink()
        self._finish(oid, target, digest.hexdigest())

    def _finish(self, oid: str, received: Path, digest: str) -> None:
        """Keep ``received`` as the object ``oid`` when its content matches, and answer."""
        if digest != oid:
            received.unlink()
            return self._error(400, "BadRequest", "content does not match its oid")
        received.replace(self.store.blob(oid))
        with self.store.lock:
            self.store.stored.append(oid)
            self.store.pending.discard(oid)
        self._send(200)

    def _receive(self, oid: str, target: Path) -> str | None:
        """Stream the body into ``target``; its sha256, or None when the upload was cut off."""
        with self.store.lock:
            kill = self.store.kill_during_upload in (True, oid)
            if kill:
                self.store.kill_during_upload = False
        length = self.headers.get("Content-Length")
        half = max(int(length or 2) // 2, 1)
        received, digest = 0, hashlib.sha256()
        try:
            with target.open("wb") as out:
                for piece in self._body_pieces(min(PIECE, half) if kill else PIECE):
                    if self.hub.down or (kill and received >= half):
                        break
                    digest.update(piece)
                    out.write(piece)
                    received += len(piece)
                else:
                    if (length is None or received == int(length)) and not self.hub.down:
                        return digest.hexdigest()
        except OSError:  # the client went away mid-body
            pass
        target.unlink(missing_ok=True)
        return self._cut(oid, kill)

    def _cut(self, oid: str, kill: bool) -> None:
        """Drop an unfinished upload; when it is the one chosen to kill the server, stop the
        server once the other objects of the batch are stored."""
        if kill:
            deadline = time.monotonic() + KILL_WAIT_S
            while self.store.pending - {oid} and time.monotonic() < deadline:
                time.sleep(0.01)
            self.hub.down = True
            threading.Thread(target=self.hub.stop, daemon=True).start()
        self._drop()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone
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
        if path.startswith("/_lfs/"):
            return self.lfs_complete(path)
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


def _lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


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
