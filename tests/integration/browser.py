"""Drive Debian's headless Chromium for page tests: a small Chrome DevTools Protocol client over aiohttp's
websocket (aiohttp comes with Faust) and a `--dump-dom` runner. No Playwright: it cannot fetch its browsers
offline, and the CDP needs only a handful of commands.

Chromium runs as root here, so with --no-sandbox; the background-networking flags keep it from trying to
reach Google on a machine without internet.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--mute-audio"]


def chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        raise AssertionError("Chromium is missing: run `make system-deps` (ops/system-deps.sh installs Debian's "
                             "chromium package) before the dashboard tests")
    return path


def dump_dom(url: str, budget_ms: int = 8000, timeout: float = 90) -> str:
    """The DOM after `budget_ms` of virtual time (timers and fetches run; the page's polling included)."""
    with tempfile.TemporaryDirectory(prefix="zorgpot-chromium-", ignore_cleanup_errors=True) as profile:
        result = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                                 "--dump-dom", url], capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"chromium --dump-dom failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    return result.stdout.decode()


class Page:
    """One tab of a headless Chromium started for it; use as a context manager."""

    def __init__(self, width: int = 1500, height: int = 900):
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._profile = tempfile.TemporaryDirectory(prefix="zorgpot-chromium-", ignore_cleanup_errors=True)
        self._loop = asyncio.new_event_loop()
        self._process: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: str | None = None

    def __enter__(self) -> "Page":
        log = open(Path(self._profile.name) / "chromium.log", "wb")
        self._process = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-port=0",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        ws_url = self._devtools_url()
        self._run(self._connect(ws_url))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self._close())
        finally:
            if self._process is not None:  # the browser and its helper processes: one process group
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(self._process.pid, sig)
                        self._process.wait(timeout=10)
                        break
                    except ProcessLookupError:
                        break
                    except subprocess.TimeoutExpired:
                        continue
            self._loop.close()
            self._profile.cleanup()

    # -- public ---------------------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"page script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied {expression!r} within {timeout}s")
            time.sleep(0.1)

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self) -> bytes:
        """PNG of the whole page, beyond the viewport if it is longer."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=max(self.height, height),
                  deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        return base64.b64decode(data)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self._run(self._send(method, params))

    # -- plumbing ---------------------------------------------------------------------------------------
    def _run(self, coro):  # noqa: ANN001, ANN202
        return self._loop.run_until_complete(asyncio.wait_for(coro, 60))

    def _devtools_url(self) -> str:
        """Chromium writes its port and browser path to DevToolsActivePort in the profile once it listens."""
        assert self._process is not None
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.exists():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"chromium did not open its DevTools port; its log: {self._log_tail()}")

    def _log_tail(self) -> str:
        path = Path(self._profile.name) / "chromium.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(none)"

    async def _connect(self, ws_url: str) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=0)
        target = (await self._send("Target.createTarget", {"url": "about:blank"}, browser=True))["targetId"]
        self._session = (await self._send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                          browser=True))["sessionId"]
        for domain in ("Page", "Runtime"):
            await self._send(f"{domain}.enable", {})
        await self._send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                                "deviceScaleFactor": 1, "mobile": False})

    async def _send(self, method: str, params: dict[str, Any], browser: bool = False) -> dict[str, Any]:
        assert self._ws is not None
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if not browser:
            message["sessionId"] = self._session
        await self._ws.send_str(json.dumps(message))
        while True:
            reply = await self._ws.receive()
            if reply.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"DevTools connection closed during {method}: {reply}")
            data = json.loads(reply.data)
            if data.get("id") == message_id:
                if "error" in data:
                    raise AssertionError(f"{method} failed: {data['error']}")
                return data.get("result", {})
            # anything else is an event of an enabled domain: not needed here

    async def _close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
