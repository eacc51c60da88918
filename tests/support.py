"""Test helpers: load a function's handler as a fresh "container" and call it with API
Gateway HTTP API v2.0 events built from the sample in events/."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVENT = json.loads((REPO / "events" / "http-api-request.json").read_text())


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/handler.py as a new module: one call = one cold container."""
    from reservations.config import settings_from_environment

    settings_from_environment.cache_clear()
    module_name = f"test_fn_{name}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, REPO / "functions" / name / "handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as an import would: dataclasses and pydantic look it up
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "test-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def http_event(
    method: str,
    path: str,
    *,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    raw_body: str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = copy.deepcopy(SAMPLE_EVENT)
    all_headers = dict(event["headers"])
    body = ""
    if json_body is not None:
        body = json.dumps(json_body)
        all_headers["content-type"] = "application/json"
    elif form is not None:
        body = urlencode(form)
        all_headers["content-type"] = "application/x-www-form-urlencoded"
    elif raw_body is not None:
        body = raw_body
    all_headers["content-length"] = str(len(body.encode()))
    if token:
        all_headers["authorization"] = f"Bearer {token}"
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    route = f"{method} {path}"
    event.update(
        routeKey=route,
        rawPath=path,
        rawQueryString=urlencode(query or {}),
        headers=all_headers,
        queryStringParameters=query or {},
        body=body,
        isBase64Encoded=False,
    )
    event["requestContext"].update(routeKey=route, requestId=uuid.uuid4().hex)
    event["requestContext"]["http"].update(method=method, path=path)
    return event


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def json(self) -> Any:
        return self.body


class FunctionClient:
    """Calls a real Lambda handler the way API Gateway would."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.handler = module.handler

    def close(self) -> None:
        """Release the container's pool, as a recycled Lambda container would."""
        runtime = self.module.app.state.runtime
        if "engine" in runtime.__dict__:
            runtime.engine.dispose()

    def call(self, method: str, path: str, **kwargs: Any) -> Response:
        result = self.handler(http_event(method, path, **kwargs), LambdaContext())
        text = result.get("body") or ""
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        body: Any = (
            json.loads(text) if text and headers.get("content-type", "").startswith("application/json") else text
        )
        return Response(result["statusCode"], headers, body)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.call("POST", path, **kwargs)
