"""Infrastructure tier: the template, the SAM build and the built artefacts.

`sam build` runs once per session (through `make build`, the documented command) into
a temporary build and cache folder, so each session checks a build from scratch and
the developer's .aws-sam is never touched. aws-sam-cli comes from its own venv
(.tools/sam, `make sam-tools`; `make test` installs it first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.helpers import (
    BUILD_TIMEOUT_SECONDS,
    RUNTIME_PROVIDED,
    SAM_VENV,
    Build,
    host_architecture,
    other_architecture,
    python312,
    run,
)


@pytest.fixture(scope="session")
def sam_cli() -> Path:
    if not (SAM_VENV / ".installed").exists():
        installed = run(["make", "--no-print-directory", "sam-tools"], timeout=600)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return SAM_VENV / "bin" / "sam"


def _sam_build(root: Path, architecture: str, *resources: str) -> Build:
    build_dir = root / "build"
    command = [
        "make",
        "--no-print-directory",
        "build",
        f"ARCH={architecture}",
        f"BUILD_DIR={build_dir}",
        f"CACHE_DIR={root / 'cache'}",
        f"SAM_BUILD_ARGS={' '.join(resources)}",
    ]
    started = time.monotonic()
    result = run(command, timeout=BUILD_TIMEOUT_SECONDS)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{' '.join(command)}` failed after {seconds:.0f} s:\n{output[-6000:]}"
    return Build(architecture, build_dir, seconds, output, list(resources))


@pytest.fixture(scope="session")
def sam_build(sam_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The whole application built for this machine's architecture (so it can run here)."""
    return _sam_build(tmp_path_factory.mktemp("sam-build"), host_architecture())


@pytest.fixture(scope="session")
def other_layer_build(sam_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Only the layer, for the other architecture (arm64 on x86_64 machines: the default target)."""
    return _sam_build(tmp_path_factory.mktemp("sam-layer"), other_architecture(), "SharedLayer")


@pytest.fixture(scope="session")
def lambda_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for /var/runtime: the runtime-provided packages, linked from this venv."""
    import importlib.util

    folder = tmp_path_factory.mktemp("var-runtime")
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed in the test environment"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture(scope="session")
def python312_path() -> str:
    return python312()


@pytest.fixture(scope="module")
def response_sink() -> Iterator[Any]:
    """A local stand-in for CloudFormation's pre-signed response URL; records every PUT."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(self.rfile.read(length) or b"{}"),
                }
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.received = received  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/response?X-Amz-Signature=local"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def aws_stub() -> Iterator[Any]:
    """A local stand-in for the AWS APIs the functions call (AWS_ENDPOINT_URL points the
    SDK here): EventBridge PutEvents (JSON 1.1) and SES SendRawEmail/SendEmail (query
    protocol) succeed and are recorded as {"action", "params"}; anything else is refused
    with a 400 and recorded too, so a test can tell what the code really calls."""
    import threading
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    calls: list[dict[str, Any]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            target = self.headers.get("X-Amz-Target") or ""
            if target:  # JSON 1.1: EventBridge
                action = target.rsplit(".", 1)[-1]
                params = json.loads(body or "{}")
                calls.append({"action": action, "params": params})
                if action == "PutEvents":
                    entries = [{"EventId": str(uuid.uuid4())} for _ in params.get("Entries", [])]
                    self._answer(
                        200, "application/x-amz-json-1.1", json.dumps({"FailedEntryCount": 0, "Entries": entries})
                    )
                else:
                    self._answer(400, "application/x-amz-json-1.1", json.dumps({"__type": "UnknownOperationException"}))
                return
            form = {key: values[0] for key, values in parse_qs(body).items()}
            action = form.get("Action", "")
            calls.append({"action": action, "params": form})
            if action in ("SendRawEmail", "SendEmail"):
                result = (
                    f'<{action}Response xmlns="http://ses.amazonaws.com/doc/2010-12-01/">'
                    f"<{action}Result><MessageId>{uuid.uuid4()}</MessageId></{action}Result>"
                    f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
                )
                self._answer(200, "text/xml", result)
            else:
                self._answer(
                    400, "text/xml", "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>"
                )

        def _answer(self, status: int, content_type: str, text: str) -> None:
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.calls = calls  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards)."""
    from reservations_dev import databases

    with databases.scratch_database(database_url, "reservations_infra", migrate=False) as url:
        yield url
