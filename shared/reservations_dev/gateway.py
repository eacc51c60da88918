"""A docker-less ``sam local start-api``: template.yaml routes -> in-process handlers.

The gateway reads the ``HttpApi`` events of every ``AWS::Serverless::Function`` in the
SAM template, so the local API cannot drift from what is deployed. Each HTTP request is
turned into the API Gateway HTTP API payload format 2.0 event that AWS would send, the
real handler is called in a worker thread, and its result is translated back the way
API Gateway does it (including its error responses).

Dev-only: it needs uvicorn (imported lazily), which is not part of the Lambda layer.
Run it with ``python -m reservations.local.gateway --template template.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import types
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, quote, unquote

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp

logger = logging.getLogger("reservations.local.gateway")  # same name when run as __main__

T = TypeVar("T")

DEFAULT_ROUTE_KEY = "$default"
ANY_METHOD = "ANY"
# API Gateway's own limit; a bigger request never reaches the function on AWS.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# Lambda's defaults when the template sets neither the function nor Globals.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128
LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_API_ID = "localapi01"
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", ANY_METHOD})

# What API Gateway (HTTP API) answers itself, byte for byte, so clients see the same.
NOT_FOUND_BODY = {"message": "Not Found"}
INTERNAL_ERROR_BODY = {"message": "Internal Server Error"}
TOO_LARGE_BODY = {"message": "Request Entity Too Large"}
UNAVAILABLE_BODY = {"message": "Service Unavailable"}
# HTTP APIs answer 500 when the function raises, times out or returns a malformed
# response (REST APIs answer 502 in the same cases; the access log of an HTTP API shows
# status 500 with integrationStatus 200).
INTEGRATION_ERROR_STATUS = 500

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PARAM_RE = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")
# Headers the response path recomputes itself; passing a handler's copy through could
# contradict the body actually sent.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


# --------------------------------------------------------------------------- template


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that accepts CloudFormation short tags (``!Ref``, ``!Sub``, ...)."""


def _construct_cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    # Turn a tag into its long JSON form ({"Ref": ...}, {"Fn::Sub": ...}) so the rest of
    # the code sees plain data and can tell an unresolved intrinsic from a literal.
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_template(template_path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template, short tags included, without cfn-lint."""
    with Path(template_path).open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{template_path}: not a CloudFormation template (top level is not a mapping)")
    return data


class FunctionSpec(Protocol):
    """What it takes to load a handler: any Route or ScheduledFunction qualifies."""

    @property
    def function_name(self) -> str: ...
    @property
    def code_uri(self) -> Path: ...
    @property
    def handler(self) -> str: ...


@dataclass(frozen=True)
class Route:
    """One HttpApi route of the template: ``method`` is upper case or ``ANY``."""

    method: str
    path: str
    function_name: str
    code_uri: Path
    handler: str
    timeout: int = DEFAULT_TIMEOUT_SECONDS
    memory_size: int = DEFAULT_MEMORY_MB

    @property
    def is_default(self) -> bool:
        return self.path == DEFAULT_ROUTE_KEY

    @property
    def route_key(self) -> str:
        """The ``routeKey`` API Gateway puts in the event, e.g. ``"POST /register"``."""
        return DEFAULT_ROUTE_KEY if self.is_default else f"{self.method} {self.path}"


@dataclass(frozen=True)
class ScheduledFunction:
    """A ``Schedule``/``ScheduleV2`` event of the template with a ``rate(...)`` expression."""

    function_name: str
    code_uri: Path
    handler: str
    event_name: str
    expression: str
    interval_seconds: float
    input: Any = None
    timeout: int = DEFAULT_TIMEOUT_SECONDS
    memory_size: int = DEFAULT_MEMORY_MB


@dataclass(frozen=True)
class _FunctionConfig:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory_size: int
    events: Mapping[str, Any]


def _python_functions(template_path: Path) -> Iterator[_FunctionConfig]:
    """Yield the functions the gateway can run in-process, Globals merged in."""
    template = load_template(template_path)
    base_dir = Path(template_path).resolve().parent
    globals_function = (template.get("Globals") or {}).get("Function") or {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**globals_function, **(resource.get("Properties") or {})}
        events = props.get("Events") or {}
        runtime = props.get("Runtime")
        # Only Python zip functions can run inside this process; others are reported
        # rather than fatal so one exotic function doesn't take the whole API down.
        if props.get("PackageType") == "Image" or "InlineCode" in props:
            logger.warning("%s: image or inline-code functions are not served locally; skipped", logical_id)
            continue
        if not (isinstance(runtime, str) and runtime.startswith("python")):
            logger.warning("%s: runtime %r cannot run in-process; skipped", logical_id, runtime)
            continue
        code_uri = props.get("CodeUri")
        handler = props.get("Handler")
        if not isinstance(code_uri, str):
            logger.warning("%s: CodeUri %r is not a local folder; skipped", logical_id, code_uri)
            continue
        if not isinstance(handler, str) or "." not in handler:
            raise ValueError(f"{logical_id}: Handler must look like 'module.function', got {handler!r}")
        yield _FunctionConfig(
            logical_id=logical_id,
            code_uri=(base_dir / code_uri).resolve(),
            handler=handler,
            timeout=_int_or(props.get("Timeout"), DEFAULT_TIMEOUT_SECONDS),
            memory_size=_int_or(props.get("MemorySize"), DEFAULT_MEMORY_MB),
            events=events if isinstance(events, dict) else {},
        )


def _int_or(value: Any, default: int) -> int:
    # A !Ref to a parameter stays a dict here; Lambda's default is the honest fallback.
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return default


def load_routes(template_path: Path) -> list[Route]:
    """Every ``HttpApi`` event of the template's Python functions, in template order.

    ``CodeUri`` is resolved against the template's folder. An ``HttpApi`` event without
    ``Path`` and ``Method`` is the ``$default`` catch-all, as in SAM.
    """
    routes: list[Route] = []
    seen: dict[str, str] = {}
    for fn in _python_functions(template_path):
        for event_name, event in fn.events.items():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            path, method = props.get("Path"), props.get("Method")
            where = f"{fn.logical_id}.Events.{event_name}"
            if path is None and method is None:
                path, method = DEFAULT_ROUTE_KEY, ANY_METHOD
            elif not (isinstance(path, str) and isinstance(method, str)):
                raise ValueError(f"{where}: HttpApi Path and Method must both be set (or neither, for $default)")
            else:
                method = method.upper()
                if method not in HTTP_METHODS:
                    raise ValueError(f"{where}: unsupported Method {method!r}")
                _compile_path(path, where)
            route = Route(
                method=method,
                path=path,
                function_name=fn.logical_id,
                code_uri=fn.code_uri,
                handler=fn.handler,
                timeout=fn.timeout,
                memory_size=fn.memory_size,
            )
            if route.route_key in seen:
                # API Gateway refuses to deploy this, so the local gateway refuses too.
                raise ValueError(f"{where}: route {route.route_key!r} is already served by {seen[route.route_key]}")
            seen[route.route_key] = fn.logical_id
            routes.append(route)
    return routes


_RATE_RE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def load_schedules(template_path: Path) -> list[ScheduledFunction]:
    """The template's ``Schedule``/``ScheduleV2`` events that use ``rate(...)``.

    ``cron(...)`` expressions are skipped with a warning: a local run needs the
    housekeeping to happen, not to happen at a particular wall-clock time.
    """
    schedules: list[ScheduledFunction] = []
    parameters = load_template(template_path).get("Parameters") or {}
    for fn in _python_functions(template_path):
        for event_name, event in fn.events.items():
            if not isinstance(event, dict) or event.get("Type") not in ("Schedule", "ScheduleV2"):
                continue
            props = event.get("Properties") or {}
            expression = props.get("Schedule") or props.get("ScheduleExpression")
            if isinstance(expression, dict) and "Ref" in expression:
                # A schedule taken from a template parameter runs at that parameter's default.
                expression = (parameters.get(str(expression["Ref"])) or {}).get("Default")
            if props.get("Enabled") is False or props.get("State") == "DISABLED":
                continue
            match = _RATE_RE.match(expression) if isinstance(expression, str) else None
            if match is None or not isinstance(expression, str):
                logger.warning("%s.%s: schedule %r is not a rate(); skipped", fn.logical_id, event_name, expression)
                continue
            amount, unit = int(match.group(1)), match.group(2).rstrip("s")
            raw_input = props.get("Input")
            schedules.append(
                ScheduledFunction(
                    function_name=fn.logical_id,
                    code_uri=fn.code_uri,
                    handler=fn.handler,
                    event_name=event_name,
                    expression=expression,
                    interval_seconds=float(amount * _RATE_UNITS[unit]),
                    input=json.loads(raw_input) if isinstance(raw_input, str) else None,
                    timeout=fn.timeout,
                    memory_size=fn.memory_size,
                )
            )
    return schedules


# --------------------------------------------------------------------------- matching

_LITERAL, _PARAM, _GREEDY = 0, 1, 2


@dataclass(frozen=True)
class _Segment:
    kind: int
    value: str  # the literal text, or the parameter name


def _split(path: str) -> list[str]:
    stripped = path[1:] if path.startswith("/") else path
    return stripped.split("/") if stripped else []


def _compile_path(path: str, where: str = "route") -> tuple[_Segment, ...]:
    if not path.startswith("/"):
        raise ValueError(f"{where}: Path must start with '/', got {path!r}")
    segments: list[_Segment] = []
    parts = _split(path)
    for index, part in enumerate(parts):
        match = _PARAM_RE.match(part)
        if match is None:
            if "{" in part or "}" in part:
                # HTTP APIs only support whole-segment variables.
                raise ValueError(f"{where}: path variable must be a whole segment: {path!r}")
            segments.append(_Segment(_LITERAL, part))
        elif match.group(2):
            if index != len(parts) - 1:
                raise ValueError(f"{where}: greedy variable must be the last segment: {path!r}")
            segments.append(_Segment(_GREEDY, match.group(1)))
        else:
            segments.append(_Segment(_PARAM, match.group(1)))
    return tuple(segments)


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


class RouteTable:
    """API Gateway's route selection for HTTP APIs.

    Precedence: the most specific path wins segment by segment (literal before
    ``{var}`` before ``{greedy+}``), then an exact method before ``ANY``; ``$default``
    only when nothing else matches. A path that exists under another method is a miss,
    exactly like an unknown path.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._default = next((r for r in self.routes if r.is_default), None)
        compiled = [(r, _compile_path(r.path, r.function_name)) for r in self.routes if not r.is_default]
        # Sorting once makes the first match the most specific one.
        self._compiled = sorted(
            compiled,
            key=lambda item: (tuple(s.kind for s in item[1]), item[0].method == ANY_METHOD),
        )

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """Match a request; ``raw_path`` is percent-encoded, as on the request line."""
        method = method.upper()
        request_parts = _split(raw_path)
        for route, segments in self._compiled:
            if route.method not in (method, ANY_METHOD):
                continue
            params = _match_segments(segments, request_parts)
            if params is not None:
                return RouteMatch(route, params)
        if self._default is not None:
            return RouteMatch(self._default, {})
        return None


def _match_segments(segments: Sequence[_Segment], parts: Sequence[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for index, segment in enumerate(segments):
        if segment.kind == _GREEDY:
            rest = "/".join(parts[index:])
            if not rest:
                return None  # `/files/{proxy+}` does not match `/files` itself
            params[segment.value] = unquote(rest)
            return params
        if index >= len(parts):
            return None
        # Split before decoding so an encoded "/" stays inside one segment.
        value = unquote(parts[index])
        if segment.kind == _LITERAL:
            if value != segment.value:
                return None
        elif not value:
            return None
        else:
            params[segment.value] = value
    return params if len(parts) == len(segments) else None


# --------------------------------------------------------------------------- event


def _is_text_media_type(content_type: str | None) -> bool:
    # HTTP APIs pass these bodies as text and base64-encode everything else
    # (form posts and a missing content type included).
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in ("application/json", "application/xml", "application/javascript")
        or media_type.endswith(("+json", "+xml"))
    )


def _format_request_time(moment: datetime) -> str:
    # strftime("%b") follows the locale; API Gateway always writes English months.
    utc = moment.astimezone(UTC)
    return f"{utc.day:02d}/{_MONTHS[utc.month - 1]}/{utc.year}:{utc:%H:%M:%S} +0000"


def _trace_id(moment: datetime) -> str:
    return f"Root=1-{int(moment.timestamp()):08x}-{secrets.token_hex(12)}"


def _domain(host_header: str | None) -> tuple[str, str]:
    host = (host_header or "localhost").strip()
    if host.startswith("["):  # [::1]:3000
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name, name.split(".", 1)[0]
    return name, name


def build_event(
    *,
    method: str,
    path: str,
    query_string: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    route_key: str = DEFAULT_ROUTE_KEY,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    protocol: str = "HTTP/1.1",
    scheme: str = "http",
    server_port: int | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event for one request.

    ``path`` is the percent-encoded request path and ``query_string`` the raw query, as
    received. Like API Gateway: header names are lower-cased and repeats joined with
    commas; ``Cookie`` headers become the ``cookies`` list; ``rawPath``, path and query
    parameters are URL-decoded (``rawQueryString`` is not); optional keys
    (``cookies``, ``queryStringParameters``, ``pathParameters``, ``body``) are left out
    when empty; a body is base64-encoded unless it is UTF-8 text of a text media type.
    With a named ``stage``, ``path`` must include its ``/<stage>`` prefix: API Gateway
    passes it on in ``rawPath``.
    """
    moment = now or datetime.now(UTC)
    method = method.upper()

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    # The headers API Gateway adds on its way to the function.
    forwarded_for = merged.get("x-forwarded-for")
    merged["x-forwarded-for"] = f"{forwarded_for}, {source_ip}" if forwarded_for else source_ip
    merged["x-forwarded-proto"] = scheme
    if server_port is not None:
        merged["x-forwarded-port"] = str(server_port)
    merged.setdefault("x-amzn-trace-id", _trace_id(moment))

    decoded_path = unquote(path) or "/"
    domain_name, domain_prefix = _domain(merged.get("host"))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": decoded_path,
        "rawQueryString": query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged

    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    if query:
        event["queryStringParameters"] = query

    event["requestContext"] = {
        "accountId": LOCAL_ACCOUNT_ID,
        "apiId": LOCAL_API_ID,
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": method,
            "path": decoded_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id or str(uuid.uuid4()),
        "routeKey": route_key,
        "stage": stage,
        "time": _format_request_time(moment),
        "timeEpoch": int(moment.timestamp() * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)

    is_base64 = False
    if body:
        text: str | None = None
        if _is_text_media_type(merged.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            text, is_base64 = base64.b64encode(body).decode("ascii"), True
        event["body"] = text
    event["isBase64Encoded"] = is_base64
    return event


def scheduled_event(schedule: ScheduledFunction, *, now: datetime | None = None) -> Any:
    """What EventBridge sends for a schedule (the constant ``Input`` when one is set)."""
    if schedule.input is not None:
        return schedule.input
    moment = now or datetime.now(UTC)
    region = _region()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT_ID,
        "time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{LOCAL_ACCOUNT_ID}:rule/{schedule.function_name}{schedule.event_name}"],
        "detail": {},
    }


# --------------------------------------------------------------------------- context


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class LambdaContext:
    """The attributes of the Python runtime's context object that code reads.

    Enough for Powertools' ``Logger.inject_lambda_context`` and ``Metrics``; the
    remaining time counts down from the function's configured ``Timeout``.
    """

    def __init__(
        self,
        *,
        function_name: str,
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        aws_request_id: str | None = None,
    ) -> None:
        region = _region()
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{today}/[$LATEST]{secrets.token_hex(16)}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


# --------------------------------------------------------------------------- handlers

LambdaHandler = Callable[[Any, Any], Any]

# Keyed by more than the logical id: two templates (a test fixture and the real one) may
# both have an "EchoFunction" with different code.
_handlers: dict[tuple[str, Path, str], LambdaHandler] = {}
_handlers_lock = threading.Lock()
_PACKAGE_ROOT = "lambda_functions"


def _ensure_package(name: str) -> None:
    # Empty placeholder packages: they give each function its own module namespace but
    # no __path__ entries, so a relative import fails here just as it does on Lambda
    # (where handler.py is a top-level module).
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package


def load_handler(function: FunctionSpec) -> LambdaHandler:
    """Import the function's handler from its CodeUri, once per function.

    Each function gets its own module name (``lambda_functions.<LogicalId>.handler``),
    so two functions' ``handler.py`` never collide in ``sys.modules``. Nothing is added
    to ``sys.path``: shared code comes from the ``reservations`` package, as in the layer.
    """
    key = (function.function_name, function.code_uri, function.handler)
    cached = _handlers.get(key)
    if cached is not None:
        return cached
    with _handlers_lock:
        cached = _handlers.get(key)
        if cached is not None:
            return cached
        # Lambda accepts both "pkg.module.fn" and "pkg/module.fn".
        module_path, attribute = function.handler.replace("/", ".").rsplit(".", 1)
        relative = Path(*module_path.split("."))
        source = function.code_uri / relative.with_suffix(".py")
        if not source.is_file() and (function.code_uri / relative / "__init__.py").is_file():
            source = function.code_uri / relative / "__init__.py"
        if not source.is_file():
            raise ImportError(f"{function.function_name}: handler module not found: {source}")
        package = f"{_PACKAGE_ROOT}.{function.function_name}"
        _ensure_package(_PACKAGE_ROOT)
        _ensure_package(package)
        module_name = f"{package}.{module_path}"
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None:
            raise ImportError(f"{function.function_name}: cannot load {source}")
        module = importlib.util.module_from_spec(spec)
        # Registered before running it: dataclasses, pydantic and typing resolve names
        # through sys.modules[cls.__module__] while the module body executes.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]  # a failed init is retried next time, as on Lambda
            raise
        handler: LambdaHandler | None = getattr(module, attribute, None)
        if not callable(handler):
            raise ImportError(f"{function.function_name}: {source} has no callable {attribute!r}")
        _handlers[key] = handler
        return handler


def clear_handler_cache() -> None:
    """Forget loaded handlers (tests use it to get a fresh "cold start")."""
    with _handlers_lock:
        for name in [n for n in sys.modules if n == _PACKAGE_ROOT or n.startswith(f"{_PACKAGE_ROOT}.")]:
            del sys.modules[name]
        _handlers.clear()


def invoke(function: Route | ScheduledFunction, event: Any, *, aws_request_id: str | None = None) -> Any:
    """Call a handler the way the Lambda runtime does; returns its JSON round-tripped result.

    The round trip matters: Lambda serialises the result to JSON, so a result that only
    works in-process (a datetime, a set) must fail here as it would on AWS.
    """
    handler = load_handler(function)
    context = LambdaContext(
        function_name=function.function_name,
        memory_limit_in_mb=function.memory_size,
        timeout_seconds=function.timeout,
        aws_request_id=aws_request_id,
    )
    started = time.monotonic()
    result = handler(json.loads(json.dumps(event)), context)
    elapsed = time.monotonic() - started
    if elapsed > function.timeout:
        logger.warning(
            "%s took %.1f s, over its Timeout of %d s: Lambda would have stopped it (API Gateway: 500)",
            function.function_name,
            elapsed,
            function.timeout,
        )
    return json.loads(json.dumps(result))


# --------------------------------------------------------------------------- response


class MalformedResponse(ValueError):
    """A handler result API Gateway would reject (it answers 500 instead)."""


def to_http_response(result: Any) -> Response:
    """Translate a handler result into the HTTP response API Gateway would send.

    Payload 2.0 rules: a dict with ``statusCode`` is a full response (``headers``,
    ``multiValueHeaders``, ``cookies`` -> one ``Set-Cookie`` each, ``body``,
    ``isBase64Encoded``); anything else is the JSON body of a 200.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        return Response(json.dumps(result), status_code=200, media_type="application/json")

    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an HTTP status code, got {status!r}")

    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise MalformedResponse(f"body must be a string, got {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedResponse(f"isBase64Encoded is true but body is not base64: {exc}") from exc
    else:
        payload = body.encode("utf-8")

    response = Response(payload, status_code=status)
    response.raw_headers.extend(_response_headers(result))
    return response


def _response_headers(result: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    raw_headers: list[tuple[bytes, bytes]] = []

    def add(name: Any, value: Any) -> None:
        if not isinstance(name, str) or isinstance(value, (dict, list)):
            raise MalformedResponse(f"bad header {name!r}: {value!r}")
        if name.lower() in _HOP_BY_HOP:
            return
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        raw_headers.append((name.lower().encode("latin-1"), text.encode("latin-1")))

    headers = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    cookies = result.get("cookies") or []
    if not isinstance(headers, dict) or not isinstance(multi, dict) or not isinstance(cookies, list):
        raise MalformedResponse("headers/multiValueHeaders must be objects and cookies a list")
    for name, value in headers.items():
        add(name, value)
    # Not part of payload 2.0, but Mangum's 1.0-style results carry it; serving it
    # beats silently dropping headers.
    for name, values in multi.items():
        for value in values if isinstance(values, list) else [values]:
            add(name, value)
    for cookie in cookies:
        add("set-cookie", cookie)
    return raw_headers


# --------------------------------------------------------------------------- workers


class _DaemonWorkers:
    """A small thread pool for handler calls whose threads never delay process exit.

    Starlette's threadpool (AnyIO) uses non-daemon threads: one handler stuck on a lock
    would keep ``make dev`` alive after Ctrl-C. Each worker also owns an asyncio event
    loop, because Mangum calls ``asyncio.get_event_loop()``, which fails in a plain
    worker thread; keeping one loop per thread mirrors one loop per Lambda container.
    """

    def __init__(self, max_workers: int = 40, idle_timeout: float = 10.0) -> None:
        self._max_workers = max_workers
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition()
        self._queue: deque[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = deque()
        self._threads = 0
        self._waiting = 0
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("gateway worker pool is shut down")
            self._queue.append((future, fn))
            # Every queued call needs a thread of its own: a waiting one, or a new one.
            if len(self._queue) > self._waiting and self._threads < self._max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name="gateway-handler", daemon=True).start()
            self._cond.notify()
        return future

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            while True:
                with self._cond:
                    if not self._queue and not self._closed:
                        self._waiting += 1
                        self._cond.wait(self._idle_timeout)
                        self._waiting -= 1
                    if not self._queue:
                        self._threads -= 1
                        return  # idle too long, or shut down
                    future, fn = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the awaiting request, which reports it
                    future.set_exception(exc)
                del future, fn
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# --------------------------------------------------------------------------- app


@dataclass(frozen=True)
class BackgroundTask:
    """A callable the gateway runs every ``interval_seconds`` while it serves."""

    name: str
    interval_seconds: float
    func: Callable[[], object]
    run_at_startup: bool = False


def scheduled_tasks(template_path: Path, *, run_at_startup: bool = False) -> list[BackgroundTask]:
    """Background tasks that invoke the template's scheduled functions at their rate."""
    tasks: list[BackgroundTask] = []
    for schedule in load_schedules(template_path):

        def fire(schedule: ScheduledFunction = schedule) -> object:
            return invoke(schedule, scheduled_event(schedule))

        tasks.append(
            BackgroundTask(
                name=f"{schedule.function_name}.{schedule.event_name} {schedule.expression}",
                interval_seconds=schedule.interval_seconds,
                func=fire,
                run_at_startup=run_at_startup,
            )
        )
    return tasks


class _PayloadTooLarge(Exception):
    pass


def _strip_stage(path: str, stage: str) -> str | None:
    """The path routes are matched against, or None outside the named stage."""
    if stage == "$default":
        return path
    prefix = f"/{stage}"
    if path == prefix or path.startswith(f"{prefix}/"):
        return path[len(prefix) :] or "/"
    return None  # API Gateway has no stage to send it to


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _PayloadTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _PayloadTooLarge  # chunked uploads have no content-length to check
    return bytes(body)


async def _run_periodically(task: BackgroundTask, workers: _DaemonWorkers) -> None:
    if not task.run_at_startup:
        await asyncio.sleep(task.interval_seconds)
    while True:
        try:
            await workers.run(task.func)
        except Exception:
            logger.exception("background task %s failed", task.name)
        await asyncio.sleep(task.interval_seconds)


def create_app(
    template_path: Path,
    *,
    on_startup: Sequence[Callable[[], None]] | None = None,
    background_tasks: Sequence[BackgroundTask] | None = None,
    max_workers: int = 40,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    stage: str = "$default",
) -> Starlette:
    """The gateway as an ASGI app serving every HttpApi route of ``template_path``.

    ``on_startup`` callables run once, in order, before the first request (e.g. start
    the embedded Postgres, run migrations). ``background_tasks`` run periodically in
    the worker pool until shutdown (e.g. ``scheduled_tasks(template_path)``).
    ``app.state.routes`` is the route list and ``app.state.route_table`` the matcher.

    ``stage`` other than ``$default`` serves the API under ``/<stage>/`` the way a named
    HttpApi stage does on AWS, where the prefix also reaches the function in ``rawPath``
    (a Mangum app then needs ``api_gateway_base_path``).
    """
    routes = load_routes(Path(template_path))
    table = RouteTable(routes)
    workers = _DaemonWorkers(max_workers=max_workers)

    async def gateway(request: Request) -> Response:
        scope = request.scope
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        route_path = _strip_stage(path, stage)
        match = table.match(request.method, route_path) if route_path is not None else None
        if match is None:
            return JSONResponse(NOT_FOUND_BODY, status_code=404)
        try:
            body = await _read_body(request, max_payload_bytes)
        except _PayloadTooLarge:
            return JSONResponse(TOO_LARGE_BODY, status_code=413)

        request_id = str(uuid.uuid4())
        server = scope.get("server")
        event = build_event(
            method=request.method,
            path=path,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
            route_key=match.route.route_key,
            path_parameters=match.path_parameters,
            source_ip=request.client.host if request.client else "127.0.0.1",
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
            scheme=scope.get("scheme", "http"),
            server_port=server[1] if server else None,
            request_id=request_id,
            stage=stage,
        )
        route = match.route
        try:
            result = await workers.run(lambda: invoke(route, event))
            response = to_http_response(result)
        except asyncio.CancelledError:
            # uvicorn cancels requests still running when its graceful shutdown times
            # out. The handler's daemon thread is left behind; answering (instead of
            # re-raising) spares the user a traceback for what is an ordinary Ctrl-C.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.warning("%s (%s) was still running at shutdown; abandoned", route.function_name, route.route_key)
            response = JSONResponse(UNAVAILABLE_BODY, status_code=503)
        except Exception as exc:  # whatever went wrong, API Gateway's answer is a bare 500
            logger.error("%s (%s) failed, requestId %s", route.function_name, route.route_key, request_id, exc_info=exc)
            response = JSONResponse(INTERNAL_ERROR_BODY, status_code=INTEGRATION_ERROR_STATUS)
        response.raw_headers.append((b"apigw-requestid", request_id.encode("ascii")))
        return response

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        for callback in on_startup or ():
            callback()
        running = [asyncio.create_task(_run_periodically(t, workers), name=t.name) for t in background_tasks or ()]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            workers.shutdown()

    app = Starlette(
        routes=[
            StarletteRoute(
                "/{path:path}",
                gateway,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                include_in_schema=False,
            )
        ],
        lifespan=lifespan,
    )
    app.state.routes = routes
    app.state.route_table = table
    return app


def format_routes(routes: Iterable[Route]) -> str:
    """The start-up table, one ``METHOD PATH -> FunctionName`` line per route."""
    rows = [(r.method, r.path, r.function_name) for r in routes]
    if not rows:
        return "(no HttpApi routes in template)"
    method_width = max(len(m) for m, _, _ in rows)
    path_width = max(len(p) for _, p, _ in rows)
    return "\n".join(f"{m:<{method_width}} {p:<{path_width}} -> {f}" for m, p, f in rows)


@contextlib.contextmanager
def run_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout: float = 15.0,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields the base URL.

    ``port=0`` picks a free port. Leaving the block stops uvicorn (lifespan shutdown
    included) and joins its thread, so tests can start one server per module.
    """
    import uvicorn  # dev-only dependency, absent from the Lambda layer

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn could not start on {host}:{port} (see its log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {startup_timeout} s")
        time.sleep(0.01)
    try:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)


def serve(
    template_path: Path,
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    on_startup: Sequence[Callable[[], None]] | None = None,
    background_tasks: Sequence[BackgroundTask] | None = None,
    log_level: str = "info",
    stage: str = "$default",
) -> None:
    """Serve the template's API until Ctrl-C (the ``sam local start-api`` of this project)."""
    import uvicorn  # dev-only dependency, absent from the Lambda layer

    app = create_app(Path(template_path), on_startup=on_startup, background_tasks=background_tasks, stage=stage)
    where = "" if stage == "$default" else f" under /{stage}"
    print(f"Routes from {template_path}{where}:\n{format_routes(app.state.routes)}", flush=True)
    for task in background_tasks or ():
        print(f"Background: {task.name} every {task.interval_seconds:g} s", flush=True)
    # uvicorn re-raises the SIGINT it handled once it has shut down cleanly; that is
    # the normal way out, not an error worth a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        # A bounded graceful shutdown: a handler stuck on a lock must not keep Ctrl-C
        # from ending the process (its thread is a daemon, see _DaemonWorkers).
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reservations.local.gateway", description=serve.__doc__)
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--pgdata",
        type=Path,
        help="start an embedded Postgres in this folder when DATABASE_URL is unreachable",
    )
    parser.add_argument("--schedules", action="store_true", help="also run the template's rate() schedules")
    parser.add_argument("--stage", default="$default", help="serve under /<stage>/ like a named HttpApi stage")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.pgdata is not None:
        from reservations.local.embedded_postgres import ensure_postgres

        # Before any handler is imported, so their settings see the URL actually in use.
        os.environ["DATABASE_URL"] = ensure_postgres(os.environ.get("DATABASE_URL", ""), args.pgdata)
    serve(
        args.template,
        args.host,
        args.port,
        background_tasks=scheduled_tasks(args.template) if args.schedules else None,
        stage=args.stage,
    )


if __name__ == "__main__":
    main()
