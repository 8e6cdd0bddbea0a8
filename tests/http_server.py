"""A local HTTP server for download tests (127.0.0.1, a thread): it answers range requests, drops
a connection once, fails with 5xx, checks a token and counts the requests it gets; and small
builders of manifests and tar archives. Used by tests/test_download.py and
tests/test_realdata_stages.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "s3cr3t-T0ken+/="  # characters that URL-quoting changes, to test every spelling is removed


class ServerState:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection is closed (once)
        self.statuses: dict[str, list[int]] = {}  # path -> statuses answered before the file
        self.token: str | None = None
        self.token_send = "query"  # or "header"
        self.ranges = True
        self.lock = threading.Lock()

    def count(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r["path"] == path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, code: int, headers: dict | None = None, body: bytes = b"") -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state: ServerState = self.server.state
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with state.lock:
            state.requests.append({"path": parts.path, "range": self.headers.get("Range"), "query": query,
                                   "authorization": self.headers.get("Authorization")})
            status = state.statuses[parts.path].pop(0) if state.statuses.get(parts.path) else None
            drop = state.drop_after.pop(parts.path, None)
        if state.token is not None:
            given = (query.get("token") or [None])[0] if state.token_send == "query" else \
                self.headers.get("Authorization")
            wanted = state.token if state.token_send == "query" else f"Bearer {state.token}"
            if given is None:
                return self._answer(401, body=b"token needed")
            if given != wanted:
                return self._answer(403, body=b"wrong token")
        if status is not None:
            return self._answer(status, body=b"try later")
        data = state.files.get(parts.path)
        if data is None:
            return self._answer(404, body=b"<html>not found</html>")
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and state.ranges:
            start = int(match.group(1))
            if start >= len(data):
                return self._answer(416, {"Content-Range": f"bytes */{len(data)}"})
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if drop is not None:  # send part of the body, then hang up
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def running_server() -> Iterator[ServerState]:
    """A server on a free port for the duration of the block; its state has ``base`` (the URL)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


# --------------------------------------------------------------------------------------------
# builders


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(tmp_path: Path, files: list[dict], name: str = "testsrc", **extra) -> Path:
    manifest = {"name": name, "title": "test source", "access": "public", "folder": "archives", "files": files,
                **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data
