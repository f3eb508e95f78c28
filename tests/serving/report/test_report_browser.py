"""The report opens in a real browser: headless Chromium, driven over the DevTools protocol.

Chromium runs with ``--remote-debugging-pipe``: DevTools protocol messages are NUL-terminated JSON on
file descriptors 3 (to the browser) and 4 (from it). That needs no port, no websocket client and no
package beyond the standard library, and the browser's own console, exceptions, resource loads and
image decoding are observed exactly as a reader's browser would report them.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
)
KEY_SECTIONS = ("summary", "importance", "dependence", "quadrant", "deciles", "ablation", "model-card")

PAGE_PROBE = """
(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(img => img.decode().then(() => true, () => false)));
  return {
    images: images.map((img, i) => ({alt: img.alt, naturalWidth: img.naturalWidth,
                                     naturalHeight: img.naturalHeight, decoded: decoded[i],
                                     inFigure: !!img.closest('figure'),
                                     caption: (img.closest('figure')?.querySelector('figcaption')?.textContent || '').trim(),
                                     scheme: img.currentSrc.split(':')[0]})),
    sections: [...document.querySelectorAll('section[id]')].map(s => ({id: s.id,
                                     heading: s.querySelector('h2')?.textContent || ''})),
    scripts: document.scripts.length,
    tables: [...document.querySelectorAll('table')].map(t => ({caption: t.caption?.textContent || '',
                                     colHeaders: t.querySelectorAll('thead th[scope=col]').length,
                                     rowHeaders: t.querySelectorAll('tbody th[scope=row]').length,
                                     rows: t.tBodies[0]?.rows.length || 0})),
    height: document.documentElement.scrollHeight,
    summaryText: document.querySelector('#summary')?.innerText || '',
  };
})()
"""


class DevToolsError(RuntimeError):
    pass


def _above_nine(fd: int) -> int:
    """``fd`` duplicated to a descriptor number of at least 10 (the original is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class PipeBrowser:
    """Headless Chromium driven over --remote-debugging-pipe (Chrome DevTools protocol, stdlib only)."""

    def __init__(self, binary: str, profile_dir: Path, *, log_path: Path, timeout: float = 60.0):
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The browser expects the pipe on fds 3 and 4 exactly; bash's exec places them there (dash
        # cannot redirect descriptors above 9). The child's ends are first moved above 9 so that
        # redirecting one cannot clobber the other.
        to_browser_read = _above_nine(to_browser_read)
        from_browser_write = _above_nine(from_browser_write)
        script = f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}'
        self._log = open(log_path, "wb")  # noqa: SIM115 - held for the browser's lifetime, closed in close()
        self.process = subprocess.Popen(
            ["bash", "-c", script, binary, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            pass_fds=(to_browser_read, from_browser_write), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)

    def send(self, method: str, params: dict | None = None, *, session: str | None = None) -> dict:
        """Send one command and wait for its result, collecting every event that arrives meanwhile."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, *, session: str | None = None) -> dict:
        """The first event named ``method`` (already received or still to come)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method and (session is None or event.get("sessionId") == session):
                    return event
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from chromium (see its log)")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise DevToolsError(f"chromium closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open_page(self, url: str, *, width: int = 1280, height: int = 900) -> str:
        """A new tab with the console, network and page domains enabled, loaded with ``url``; its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session=session)
        return session

    def evaluate(self, expression: str, *, session: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=session)
        if "exceptionDetails" in result:
            raise DevToolsError(f"page probe failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self, *, session: str, full_page: bool = False) -> bytes:
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return base64.b64decode(self.send("Page.captureScreenshot", params, session=session)["data"])

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (failed loads, CSP violations)."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
        return errors

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (DevToolsError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


def browse(chromium: str, report: Path, folder: Path):
    """``report`` opened in headless Chromium: (page probe, console errors, requested URLs, screenshot)."""
    with PipeBrowser(chromium, folder / "profile", log_path=folder / "chromium.log") as browser:
        session = browser.open_page(report.resolve().as_uri())
        probe = browser.evaluate(PAGE_PROBE, session=session)
        screenshot = browser.screenshot(session=session)
        errors = browser.console_errors()
        urls = browser.requested_urls()
    (folder / "report.png").write_bytes(screenshot)
    return probe, errors, urls, screenshot


@pytest.fixture(scope="module")
def browsed(chromium, built_report, tmp_path_factory):
    """The built report opened in headless Chromium: (page probe, console errors, requested URLs, screenshot)."""
    return browse(chromium, built_report, tmp_path_factory.mktemp("chromium"))


def test_the_report_with_todays_scores_opens_cleanly_with_print_resolution_figures(
        chromium, scored_report, tmp_path_factory):
    probe, errors, urls, _ = browse(chromium, scored_report, tmp_path_factory.mktemp("chromium-scores"))
    assert errors == [] and probe["scripts"] == 0
    assert [u for u in urls if not (u.startswith("data:") or u == scored_report.resolve().as_uri())] == []
    assert [s["id"] for s in probe["sections"]] == ["summary", "decisions", *KEY_SECTIONS[1:]]
    assert all(t["caption"] and t["rowHeaders"] == t["rows"] > 0 for t in probe["tables"])
    assert all(i["decoded"] and i["naturalWidth"] >= 1600 for i in probe["images"])


def test_the_report_opens_without_console_errors(browsed):
    probe, errors, _, _ = browsed
    assert errors == []
    assert probe["scripts"] == 0


def test_the_report_needs_nothing_but_its_own_file(browsed, built_report):
    _, _, urls, _ = browsed
    outside = [u for u in urls if not (u.startswith("data:") or u == built_report.resolve().as_uri())]
    assert outside == []


def test_every_image_is_decoded_and_described(browsed):
    probe, _, _, _ = browsed
    images = probe["images"]
    assert len(images) >= 8  # importance x2, dependence x4, quadrant, decile lift, calibration
    for image in images:
        assert image["decoded"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image["alt"]
        assert image["scheme"] == "data"
        assert image["inFigure"] and len(image["alt"]) > 40 and image["caption"]


def test_every_key_section_is_present_with_real_tables(browsed):
    probe, _, _, _ = browsed
    assert [s["id"] for s in probe["sections"]] == list(KEY_SECTIONS)
    assert all(s["heading"] for s in probe["sections"])
    assert len(probe["tables"]) >= 6
    for table in probe["tables"]:
        assert table["caption"] and table["colHeaders"] >= 2 and table["rowHeaders"] == table["rows"] > 0
    assert "points of normalised Gini" in probe["summaryText"]
    assert "Influence is one input" in probe["summaryText"]


def test_the_screenshot_is_not_blank(browsed, tmp_path):
    _, _, _, screenshot = browsed
    from PIL import Image

    image = Image.open(io.BytesIO(screenshot)).convert("RGB")
    assert image.size == (1280, 900)
    assert distinct_colours(screenshot) > 50
    assert image.getextrema() != ((255, 255), (255, 255), (255, 255))
