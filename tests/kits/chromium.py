"""Open a page in headless Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL on file descriptors 3 and 4; no websocket library, no network), and
report what a user's browser would: console errors, exceptions, failed loads, images that did not
load, and a full-page screenshot."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
IMAGES_LOADED = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({alt: i.alt, ok: i.complete && i.naturalWidth > 0})))"
)


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class DevTools:
    """A minimal DevTools-protocol client on Chromium's pipe."""

    def __init__(self, browser: str, profile: str):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        os.set_inheritable(to_child_r, True)
        os.set_inheritable(from_child_w, True)
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--allow-file-access-from-files",
        ]

        def wire():  # in the child: the protocol's descriptors 3 (in) and 4 (out)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        # close_fds=False: the descriptors dup2'ed in the child must survive to Chromium
        self.process = subprocess.Popen(
            command, preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(timeout=60)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        self.process.wait(timeout=30)


def errors_in(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among the protocol's events."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"load failed: {params.get('errorText')}")
    return found


def open_page(page: Path, screenshot: Path, width: int = 1200) -> dict:
    """Load ``page`` (a file), wait for its load event, and return ``{"errors": [...], "images":
    [{alt, ok}], "screenshot": path}`` with a full-page PNG written to ``screenshot``."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium on this machine")
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(browser, profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.send(f"{domain}.enable", session=session)
            tools.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session,
            )
            tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
            deadline = time.monotonic() + 60
            while not any(e.get("method") == "Page.loadEventFired" for e in tools.events):
                tools.events.append(tools.receive(timeout=max(1.0, deadline - time.monotonic())))
            images = json.loads(
                tools.send("Runtime.evaluate", {"expression": IMAGES_LOADED, "returnByValue": True}, session)[
                    "result"
                ]["value"]
            )
            shot = tools.send(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return {"errors": errors_in(tools.events), "images": images, "screenshot": screenshot}
        finally:
            tools.close()
