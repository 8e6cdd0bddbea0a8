"""Headless Chromium for the page tests, driven over the DevTools protocol on a pipe.

``chromium --remote-debugging-pipe`` reads DevTools commands on file descriptor 3 and writes
replies and events on descriptor 4, each a JSON message ended by a NUL byte: the standard library
is enough (no websocket client, no browser driver package). The network is switched off in the
page (DevTools network emulation, and no host name resolves), so a page that needs anything
beyond itself shows up as a failed request or a console error instead of quietly loading it.

Debian's package is ``chromium`` (``apt-get install -y chromium``); ``DIFFPOSE_CHROMIUM`` names
another binary. :func:`require_chromium` skips a test without it, and fails it under ``CI=true``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, in_ci

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    explicit = os.environ.get("DIFFPOSE_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def require_chromium() -> str:
    """The browser binary; skips (locally) or fails (CI=true) with the way to install it."""
    binary = find_chromium()
    if binary is None:
        reason = ("headless Chromium not found (install the Debian package: apt-get install -y chromium; "
                  "or set DIFFPOSE_CHROMIUM)")
        if in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return binary


def artifacts_dir() -> Path:
    """Where the tests keep screenshots: $DIFFPOSE_TEST_ARTIFACTS, default tests/artifacts (git-ignored)."""
    folder = Path(os.environ.get("DIFFPOSE_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class PageResult:
    """What a page did while it loaded, and the values of the checks evaluated in it."""

    console_errors: list[str] = field(default_factory=list)  # console.error, uncaught exceptions, browser log errors
    failed_requests: list[str] = field(default_factory=list)  # "<url>: <error>"
    requested_urls: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


class DevToolsError(RuntimeError):
    pass


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Browser:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, binary: str, profile: Path, stderr_path: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # above 9, so that moving them onto 3 and 4 in the child cannot overwrite one another
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,900",
            "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank",
        ]
        # the browser expects the pipe on descriptors 3 and 4 exactly: bash moves them there (dash,
        # Debian's /bin/sh, takes single-digit descriptors only)
        move = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self._stderr = open(stderr_path, "wb")
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", move, binary, *args], pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._messages: queue.Queue = queue.Queue()
        self._events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self._messages.put(json.loads(raw))

    def _receive(self, deadline: float) -> dict:
        try:
            message = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise DevToolsError("Chromium did not answer in time") from None
        if message is None:
            raise DevToolsError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
        return message

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for event in self._events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self._events.append(event)
            if event.get("method") == method:
                return event

    def events(self) -> list[dict]:
        while not self._messages.empty():
            message = self._messages.get_nowait()
            if message is not None:
                self._events.append(message)
        return list(self._events)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (DevToolsError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        self._stderr.close()


def _collect(events: list[dict], result: PageResult) -> None:
    urls: dict[str, str] = {}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])]
            result.console_errors.append("console." + params["type"] + ": " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            result.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            result.console_errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
            result.requested_urls.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            url = urls.get(params.get("requestId"), "<unknown url>")
            result.failed_requests.append(f"{url[:200]}: {params.get('errorText')}")


def open_page(path: Path, checks: dict[str, str], *, ready: str = "true", screenshot: Path | None = None,
              timeout: float = 60.0) -> PageResult:
    """Load ``path`` offline in headless Chromium, wait until the JavaScript expression ``ready`` is
    true, evaluate each expression of ``checks`` (JSON-serialisable results) and, with
    ``screenshot``, save a PNG of the whole page there."""
    binary = require_chromium()
    result = PageResult()
    with tempfile.TemporaryDirectory(prefix="diffpose-chromium-") as tmp:
        browser = _Browser(binary, Path(tmp) / "profile", Path(tmp) / "chromium.log")
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                              "uploadThroughput": -1}, session=session)
            browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            browser.wait_event("Page.loadEventFired", timeout)
            waited = browser.send("Runtime.evaluate", {
                "expression": f"""new Promise(done => {{ const t0 = Date.now(); (function poll() {{
                    if ({ready}) done(true); else if (Date.now() - t0 > {int(timeout * 1000)}) done(false);
                    else setTimeout(poll, 50); }})(); }})""",
                "awaitPromise": True, "returnByValue": True}, session=session, timeout=timeout + 5)
            result.values["ready"] = waited.get("result", {}).get("value")
            for name, expression in checks.items():
                reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                          "awaitPromise": True}, session=session)
                if "exceptionDetails" in reply:
                    raise DevToolsError(f"check {name!r} raised: {reply['exceptionDetails']}")
                result.values[name] = reply.get("result", {}).get("value")
            if screenshot is not None:
                size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot = browser.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}},
                    session=session, timeout=timeout)
                result.screenshot = base64.b64decode(shot["data"])
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(result.screenshot)
            time.sleep(0.2)  # late console messages
            _collect(browser.events(), result)
        finally:
            browser.close()
    return result
