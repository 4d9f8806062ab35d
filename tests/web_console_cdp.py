"""A minimal headless-Chromium driver over the DevTools protocol (for the web console tests).

Chromium runs as its own process with a fresh profile; one page target is driven over a websocket:
navigate, evaluate JavaScript, wait for a condition, take a screenshot. Uncaught page exceptions and
console errors are collected so a test can assert there were none.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("PGKB_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str | None:
    """Debian's chromium package via apt-get (root only); None when that is impossible."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-dejavu-core"]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
    return find_chromium()


class CDPError(RuntimeError):
    pass


class Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=20)
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        self._next += 1
        msg_id = self._next
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer in {timeout} s")
            msg = json.loads(self.ws.recv(timeout=remaining))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            raise CDPError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Polls `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for: {expression}")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def reload(self) -> None:
        self.evaluate("window.__stale = true")  # gone once the new document has replaced the old one
        self.send("Page.reload")
        self.wait_for("!window.__stale && document.readyState === 'complete'")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Uncaught exceptions, console.error calls and logged errors (CSP, failed loads) so far."""
        self.send("Runtime.evaluate", {"expression": "1"})  # drain pending events
        out = []
        for ev in self.events:
            if ev["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(ev["params"]["exceptionDetails"])[:500])
            elif ev["method"] == "Runtime.consoleAPICalled" and ev["params"]["type"] == "error":
                out.append(json.dumps(ev["params"]["args"])[:500])
            elif ev["method"] == "Log.entryAdded" and ev["params"]["entry"]["level"] == "error":
                entry = ev["params"]["entry"]
                # API errors the test provokes on purpose are logged too; failed page assets are not
                if entry.get("source") == "network" and "/console" not in entry.get("url", ""):
                    continue
                out.append(json.dumps(entry)[:500])
        return out

    def close(self) -> None:
        self.ws.close()


class Browser:
    def __init__(self, executable: str, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise CDPError("chromium did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])

    def new_page(self) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=20) as resp:
            target = json.load(resp)
        page = Page(target["webSocketDebuggerUrl"])
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Log.enable")  # CSP violations and failed loads arrive as Log entries
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
