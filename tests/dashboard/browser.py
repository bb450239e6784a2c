"""A real headless Chromium (Debian's /usr/bin/chromium) driven over the DevTools protocol.

Nothing is downloaded: the browser is the system one (``make test`` installs it when missing) and
the protocol is spoken over a local websocket. The browser runs in its own process group, killed
(with every child) when the ``with`` block ends, whatever happened inside it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = os.environ.get("LAU_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0")


class Browser:
    """``with Browser(profile_dir) as b: b.open(url); b.evaluate("document.title")``."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        self.profile, self.width, self.height = Path(profile), width, height
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={self.width},{self.height}", "about:blank"],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            self.ws = connect(self._page_socket(), max_size=None, open_timeout=15)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _page_socket(self, timeout_s: float = 30) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}); see {self.profile}/chromium.log")
            if port_file.is_file() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                    pages = [t for t in json.load(answer) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open its DevTools port in {timeout_s:.0f} s")

    def send(self, method: str, timeout_s: float = 30, **params: Any) -> dict:
        """One protocol command; returns its result (events received meanwhile are kept)."""
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def open(self, url: str, timeout_s: float = 30) -> None:
        """Navigate and wait for the load event."""
        self._events = []
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self._events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window)."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=height,
                  deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the whole group: chromium's helpers too
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
