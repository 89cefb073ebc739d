"""A local stand-in for the Hugging Face Hub's HTTP API, for offline tests of the real client.

Enough of the Hub for ``huggingface_hub`` 2.x pointed at it (``HfApi(endpoint=...)``, or
``constants.ENDPOINT`` and ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` patched) to create a model
repo, upload a folder (preupload answers "regular" for every file, so no LFS or Xet transfer is
needed; the NDJSON commit payload carries the files base64-encoded) and download it again
(model info, tree listing, ``resolve`` HEAD/GET with the headers the client checks).

Everything lives in memory and is served on 127.0.0.1 from a daemon thread::

    with FakeHub() as hub:                      # or FakeHub(refuse=401): every request is a 401
        HfApi(endpoint=hub.url, token="t").create_repo("me/model")

A request that matches no route gets a 404 and is listed in ``hub.unknown``, so a test can show
what a newer client asks for. Only model repos with an ``owner/name`` id are supported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"  # the client quotes a revision with safe="", so it is one path segment
# (method, raw path pattern, handler name); matched before unquoting so that %2F stays inside a group.
_ROUTES = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("GET", rf"/api/models/{_REPO}(?:/revision/{_REV})?", "model_info"),
    ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", "preupload"),
    ("POST", rf"/api/models/{_REPO}/commit/{_REV}", "commit"),
    ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
]


_REFUSALS = {401: "Invalid credentials in Authorization header", 403: "You don't have the rights to do this"}


def git_blob_sha(content: bytes) -> str:
    """The git blob id of ``content``: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = extra or {}  # more fields of the JSON answer


@dataclass
class Repo:
    """One model repo: every commit's full file set, and branch -> commit sha."""

    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def files(self, revision: str) -> tuple[str, dict[str, bytes]]:
        """(commit sha, files) at a branch name or full commit sha."""
        sha = self.refs.get(revision, revision)
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, self.commits[sha]

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        """Record a commit of ``files`` on ``branch``; its sha is derived from parent, message and content."""
        parent = self.refs.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {git_blob_sha(files[path])}\n".encode())
        sha = digest.hexdigest()
        self.commits[sha], self.refs[branch], self.messages[sha] = dict(files), sha, message
        return sha


class FakeHub:
    """The stand-in Hub server: start with ``with FakeHub() as hub``; ``hub.url`` is its endpoint.

    Args:
        refuse: answer every request with this status: 401 "Invalid credentials", as the Hub
            does for a revoked or mistyped token, or 403 "Forbidden", as for a read-only token.
        drop_downloads: close the connection without an answer on every file GET (HEAD still
            works), as a network that fails in the middle of a download does.
    """

    def __init__(self, *, refuse: int | None = None, drop_downloads: bool = False) -> None:
        self.refuse, self.drop_downloads = refuse, drop_downloads
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.unknown: list[str] = []  # "METHOD /path" of requests no route matched
        self.auth_headers: list[str] = []  # Authorization headers seen, to check the token sent
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The endpoint, ``http://127.0.0.1:<port>``."""
        assert self._server is not None, "FakeHub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        # A short poll interval keeps shutdown() (once per test) quick.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False) -> str:
        """Seed a repo directly (no HTTP) with one commit of ``files`` on main; returns its sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(private=private))
            return repo.commit("main", files, "seeded by the test")

    # ------------------------------------------------------------------ API handlers
    # Each takes (the route's match groups, the query, the request body) and returns
    # (status, headers, body bytes); a HubError becomes an error answer with the Hub's headers.

    def create_repo(self, groups: dict, query: dict, body: bytes) -> tuple:
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, "the stand-in Hub only holds model repos")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            # The Hub's 409 carries the url: create_repo(exist_ok=True) reads it.
            raise HubError(409, "You already created this model repo", extra={"url": f"{self.url}/{repo_id}"})
        repo = Repo(private=payload.get("visibility") == "private")
        # Like the Hub, a new repo starts with one commit holding .gitattributes.
        repo.commit("main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial")
        self.repos[repo_id] = repo
        return _json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self, groups: dict, query: dict, body: bytes) -> tuple:
        return _json(200, {"errors": [], "warnings": []})

    def agent_harnesses(self, groups: dict, query: dict, body: bytes) -> tuple:
        # The client fetches this registry once per process to name an AI agent in its User-Agent.
        return _json(200, {"standardEnvVars": [], "harnesses": {}})

    def model_info(self, groups: dict, query: dict, body: bytes) -> tuple:
        repo_id, repo = self._repo(groups)
        sha, files = repo.files(groups.get("rev") or "main")
        siblings = [{"rfilename": p, "size": len(c), "blobId": git_blob_sha(c)} for p, c in sorted(files.items())]
        return _json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                           "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    def tree(self, groups: dict, query: dict, body: bytes) -> tuple:
        _, repo = self._repo(groups)
        _, files = repo.files(groups["rev"])
        prefix = (groups.get("path") or "").strip("/")
        prefix = f"{prefix}/" if prefix else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path})
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
        return _json(200, entries)

    def preupload(self, groups: dict, query: dict, body: bytes) -> tuple:
        _, repo = self._repo(groups)
        _, current = repo.files(groups["rev"])
        answers = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                    "oid": git_blob_sha(current[f["path"]]) if f["path"] in current else None}
                   for f in json.loads(body)["files"]]
        return _json(200, {"files": answers})

    def commit(self, groups: dict, query: dict, body: bytes) -> tuple:
        repo_id, repo = self._repo(groups)
        branch = groups["rev"]
        _, files = repo.files(branch)
        files, message = dict(files), ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:  # lfsFile: preupload never asks for LFS, so a client sending one is doing something new
                raise HubError(400, f"the stand-in Hub does not take {key!r} commit entries")
        sha = repo.commit(branch, files, message)
        return _json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                           "pullRequestUrl": None, "hookOutput": ""})

    def resolve(self, groups: dict, query: dict, body: bytes) -> tuple:
        _, repo = self._repo(groups)
        sha, files = repo.files(groups["rev"])
        content = files.get(groups["path"])
        if content is None:
            raise HubError(404, f"{groups['path']} does not exist", "EntryNotFound", commit=sha)
        # Content-Length is set from the body by _Handler (also on HEAD, where no body is sent).
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"',
                   "Content-Type": "application/octet-stream"}
        return 200, headers, content

    def _repo(self, groups: dict) -> tuple[str, Repo]:
        repo_id = groups["repo"]
        if repo_id not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo_id, self.repos[repo_id]


def _json(status: int, payload: object) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        body = self._read_body()
        auth = self.headers.get("Authorization")
        try:
            handler, groups = self._route(url.path)
            if auth:
                hub.auth_headers.append(auth)
            if hub.refuse:
                raise HubError(hub.refuse, _REFUSALS.get(hub.refuse, "Refused by the test"))
            if handler is None:
                hub.unknown.append(f"{self.command} {self.path}")
                raise HubError(404, f"stand-in Hub: no route for {self.command} {url.path}")
            if hub.drop_downloads and handler == "resolve" and self.command == "GET":
                self.close_connection = True
                hub.log.append((self.command, url.path, 0))
                return
            with hub.lock:
                status, headers, payload = getattr(hub, handler)(groups, parse_qs(url.query), body)
        except HubError as err:
            status, headers, payload = _json(err.status, {"error": err.message, **err.extra})
            headers["X-Error-Message"] = err.message
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
        hub.log.append((self.command, url.path, status))
        self._send(status, headers, payload)

    def _route(self, raw_path: str) -> tuple[str | None, dict]:
        for method, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, raw_path)
            if method == self.command and match:
                return handler, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
        return None, {}

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, headers: dict, payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # requests are kept in FakeHub.log instead of being printed to stderr
