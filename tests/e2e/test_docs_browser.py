"""Swagger UI at /docs in a real headless Chromium (Debian's /usr/bin/chromium), served by
the local gateway: the operations render, nothing is fetched from another origin and the
page's Content-Security-Policy is never violated.

Chromium is driven over the DevTools protocol (a WebSocket, `websockets` from PyPI): it
records every request the page makes. Host names other than 127.0.0.1 do not resolve
(--host-resolver-rules), so a page that needed a CDN would also fail to render.
`make test` installs chromium with apt-get when it is missing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from reservations_dev.harness import clear_handler_cache
from reservations_dev.server import create_app, run_in_thread
from tests.support import REPO

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
RENDER_TIMEOUT_SECONDS = 45
# Operations of each function group that must be listed.
EXPECTED_OPERATIONS = {
    ("post", "/token"),
    ("post", "/register"),
    ("get", "/providers/{provider_id}/time-slots"),
    ("post", "/appointments/reserve"),
    ("post", "/appointments/confirm"),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class DevTools:
    """The DevTools protocol on one page target: commands, and every event kept in order."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=RENDER_TIMEOUT_SECONDS))
            if message.get("id") == message_id:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def of(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e.get("method") == method]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).is_file() and shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def gateway_url(database_url: str) -> Iterator[str]:
    clear_handler_cache()
    with run_in_thread(create_app(REPO / "template.yaml")) as base_url:
        yield base_url
    clear_handler_cache()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "profile"  # a fresh profile: no cache, no service worker
    process = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            devtools = DevTools(socket)
            for domain in ("Network", "Page", "Runtime", "Log"):
                devtools.send(f"{domain}.enable")
            yield devtools
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def rendered_operations(devtools: DevTools) -> set[tuple[str, str]]:
    """(method, path) of every operation Swagger UI rendered, once the list stops growing."""
    script = """Array.from(document.querySelectorAll('.opblock')).map(block => [
        (block.querySelector('.opblock-summary-method') || {}).textContent || '',
        ((block.querySelector('.opblock-summary-path') || {}).textContent || '').replace(/\\u200b/g, '')])"""
    deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
    seen: list[list[str]] = []
    while time.monotonic() < deadline:
        found = devtools.evaluate(script) or []
        if found and found == seen:
            break
        seen = found
        time.sleep(0.5)
    return {(method.strip().lower(), path.strip()) for method, path in seen}


def test_swagger_ui_renders_every_group_from_this_origin_only(gateway_url: str, browser: DevTools) -> None:
    docs_url = f"{gateway_url}/docs"
    browser.send("Page.navigate", url=docs_url)
    operations = rendered_operations(browser)

    requested = [r["request"]["url"] for r in browser.of("Network.requestWillBeSent")]
    foreign = [url for url in requested if not url.startswith(f"{gateway_url}/")]
    failed = [(r["requestId"], r["errorText"]) for r in browser.of("Network.loadingFailed")]
    messages = [e["entry"]["text"] for e in browser.of("Log.entryAdded")]
    messages += [" ".join(str(a.get("value", "")) for a in c["args"]) for c in browser.of("Runtime.consoleAPICalled")]
    errors = [e["exceptionDetails"].get("text") for e in browser.of("Runtime.exceptionThrown")]

    assert foreign == [], f"requests left {gateway_url}: {foreign}"
    assert operations >= EXPECTED_OPERATIONS, f"rendered {sorted(operations)}; messages {messages}"
    assert f"{gateway_url}/openapi.json" in requested
    assert f"{gateway_url}/docs/swagger-ui-bundle.js" in requested
    assert failed == [], failed
    assert [m for m in messages if "Content Security Policy" in m] == []
    assert errors == []
    # Every path of the document is on the page, once per method.
    document = json.loads((REPO / "openapi.json").read_text())
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == documented


def test_docs_pages_carry_a_self_only_content_security_policy(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for path in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js", "/docs/swagger-ui.css"):
            response = client.get(path, headers={"accept-encoding": "gzip"})
            assert response.status_code == 200, path
            policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
            assert policy["default-src"] == "'none'", path
            for directive in ("script-src", "style-src", "font-src", "connect-src"):
                assert policy[directive] == "'self'", (path, directive)
            assert policy["img-src"].split()[0] == "'self'", path
        page = client.get("/docs").text
        assert "<script>" not in page and "style=" not in page  # nothing inline
        assert "//" not in page.replace("<!doctype html>", "")  # no absolute or protocol-relative URL
