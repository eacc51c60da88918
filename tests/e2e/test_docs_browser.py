"""Swagger UI at /docs and ReDoc at /redoc in a real headless Chromium (Debian's
/usr/bin/chromium), served by the local gateway: the operations render, nothing is fetched
from another origin and the pages' Content-Security-Policy is never violated.

Chromium is driven over the DevTools protocol (a WebSocket, `websockets` from PyPI): it
records every request the page makes. Host names other than 127.0.0.1 do not resolve
(--host-resolver-rules), so a page that needed a CDN would also fail to render.
`make test` installs chromium with apt-get when it is missing, and fetches ReDoc's bundle
(`make redoc`) when it is not there.
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


def rendered(devtools: DevTools, script: str) -> list[list[str]]:
    """What ``script`` finds on the page, once the list stops growing."""
    deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
    seen: list[list[str]] = []
    while time.monotonic() < deadline:
        found = devtools.evaluate(script) or []
        if found and found == seen:
            break
        seen = found
        time.sleep(0.5)
    return seen


def rendered_operations(devtools: DevTools) -> set[tuple[str, str]]:
    """(method, path) of every operation Swagger UI rendered."""
    script = """Array.from(document.querySelectorAll('.opblock')).map(block => [
        (block.querySelector('.opblock-summary-method') || {}).textContent || '',
        ((block.querySelector('.opblock-summary-path') || {}).textContent || '').replace(/\\u200b/g, '')])"""
    return {(method.strip().lower(), path.strip()) for method, path in rendered(devtools, script)}


def redoc_operations(devtools: DevTools) -> set[tuple[str, str]]:
    """(operationId, title) of every operation ReDoc rendered: its sections are
    ``tag/<tag>/operation/<operationId>``, each titled by the operation's summary."""
    script = """Array.from(document.querySelectorAll('[data-section-id*="operation/"]')).map(section => [
        section.getAttribute('data-section-id').split('operation/').pop(),
        (section.querySelector('h2') || {}).textContent || ''])"""
    return {(operation_id, title.strip()) for operation_id, title in rendered(devtools, script)}


def page_log(devtools: DevTools) -> dict[str, list[Any]]:
    messages = [e["entry"]["text"] for e in devtools.of("Log.entryAdded")]
    messages += [" ".join(str(a.get("value", "")) for a in c["args"]) for c in devtools.of("Runtime.consoleAPICalled")]
    return {
        "requested": [r["request"]["url"] for r in devtools.of("Network.requestWillBeSent")],
        "failed": [(r["requestId"], r["errorText"]) for r in devtools.of("Network.loadingFailed")],
        "messages": messages,
        "errors": [e["exceptionDetails"].get("text") for e in devtools.of("Runtime.exceptionThrown")],
    }


def self_only_policy(header: str) -> dict[str, str]:
    policy = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "font-src", "connect-src"):
        assert policy[directive] == "'self'", directive
    assert policy["img-src"].split()[0] == "'self'"
    return policy


def test_swagger_ui_renders_every_group_from_this_origin_only(gateway_url: str, browser: DevTools) -> None:
    docs_url = f"{gateway_url}/docs"
    browser.send("Page.navigate", url=docs_url)
    operations = rendered_operations(browser)

    log = page_log(browser)
    requested, failed, messages, errors = log["requested"], log["failed"], log["messages"], log["errors"]
    foreign = [url for url in requested if not url.startswith(f"{gateway_url}/")]

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


def test_redoc_renders_every_operation_from_this_origin_only(gateway_url: str, browser: DevTools) -> None:
    redoc_url = f"{gateway_url}/redoc"
    browser.send("Page.navigate", url=redoc_url)
    operations = redoc_operations(browser)

    log = page_log(browser)
    requested, failed, messages, errors = log["requested"], log["failed"], log["messages"], log["errors"]
    # data: URLs (ReDoc's inline icons, which img-src allows) are no request to anywhere.
    foreign = [url for url in requested if not url.startswith((f"{gateway_url}/", "data:"))]
    # ReDoc's styles are <style> elements it inserted at run time, admitted by the nonce.
    styled = browser.evaluate(
        """Array.from(document.querySelectorAll('style')).map(
            s => [s.nonce !== '', s.sheet ? s.sheet.cssRules.length : -1])"""
    )

    assert foreign == [], f"requests left {gateway_url}: {foreign}"
    assert f"{gateway_url}/openapi.json" in requested
    assert f"{gateway_url}/redoc/redoc.standalone.js" in requested
    assert failed == [], failed
    assert [m for m in messages if "Content Security Policy" in m] == [], messages
    assert errors == []
    assert styled and all(has_nonce for has_nonce, _ in styled), styled
    assert sum(rules for _, rules in styled) > 100, styled  # the page is styled, not bare HTML
    # Every operation of the document, titled by its summary.
    document = json.loads((REPO / "openapi.json").read_text())
    documented = {(o["operationId"], o["summary"]) for item in document["paths"].values() for o in item.values()}
    assert operations == documented, f"rendered {sorted(operations)}; messages {messages}"


def test_docs_pages_carry_a_self_only_content_security_policy(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for path in (
            "/docs",
            "/docs/swagger-ui-bundle.js",
            "/docs/swagger-initializer.js",
            "/docs/swagger-ui.css",
            "/redoc/redoc.standalone.js",
            "/redoc/redoc-initializer.js",
        ):
            response = client.get(path, headers={"accept-encoding": "gzip"})
            assert response.status_code == 200, path
            assert self_only_policy(response.headers["content-security-policy"])["style-src"] == "'self'", path
        page = client.get("/docs").text
        assert "<script>" not in page and "style=" not in page  # nothing inline
        assert "//" not in page.replace("<!doctype html>", "")  # no absolute or protocol-relative URL


def test_redoc_page_admits_only_its_own_nonce_for_styles(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        first, second = client.get("/redoc"), client.get("/redoc")
    nonces = []
    for response in (first, second):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        sources = self_only_policy(response.headers["content-security-policy"])["style-src"].split()
        assert sources[0] == "'self'" and len(sources) == 2 and sources[1].startswith("'nonce-"), sources
        nonce = sources[1].removeprefix("'nonce-").removesuffix("'")
        assert f'nonce="{nonce}"' in response.text
        nonces.append(nonce)
        page = response.text
        assert "<script>" not in page and "style=" not in page  # nothing inline
        assert "//" not in page.replace("<!doctype html>", "")  # no absolute or protocol-relative URL
    assert nonces[0] != nonces[1] and len(nonces[0]) >= 22  # random per response
