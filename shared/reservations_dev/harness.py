"""The one Lambda harness: run a function's handler in this process the way Lambda does.

Everything that calls a real handler outside AWS goes through here: the local gateway
(``invoke``), the handler and integration tests and the benches (``load_function``,
``FunctionClient``, ``http_event``, ``call``), ``scripts/openapi.py`` and the route
parity test (``load_module``). A handler is found the way template.yaml names it
(``CodeUri`` + ``Handler``), gets a ``LambdaContext`` like the Python runtime's, and is
called on a thread that has an asyncio event loop (Mangum needs one).

``tests/infra/lambda_driver.py`` keeps its own small context class: it runs in a bare
``python3.12 -S -P`` process where only the built artefacts may be imported, and loading
this file there would pull in this package's dependencies (PyYAML, Starlette) and count
as a module from outside the build in its foreign-module check.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import secrets
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from reservations_dev.events import LOCAL_ACCOUNT_ID, build_event, region
from reservations_dev.template import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_SECONDS,
    FunctionSpec,
    TemplateFunction,
    load_functions,
)

logger = logging.getLogger("reservations_dev.gateway")  # the local gateway's one log channel

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
SAMPLE_EVENT = REPO / "events" / "http-api-request.json"

LambdaHandler = Callable[[Any, Any], Any]


# --------------------------------------------------------------------------- context


class LambdaContext:
    """The attributes of the Python runtime's context object that code reads.

    Enough for Powertools' ``Logger.inject_lambda_context`` and ``Metrics``; the
    remaining time counts down from the function's configured ``Timeout``.
    """

    def __init__(
        self,
        *,
        function_name: str = "local-function",
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        aws_request_id: str | None = None,
    ) -> None:
        aws_region = region()
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{aws_region}:{LOCAL_ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{today}/[$LATEST]{secrets.token_hex(16)}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_seconds

    @classmethod
    def of(cls, function: FunctionSpec, *, aws_request_id: str | None = None) -> LambdaContext:
        """A context for one invocation of ``function``, with its MemorySize and Timeout."""
        return cls(
            function_name=function.function_name,
            memory_limit_in_mb=function.memory_size,
            timeout_seconds=function.timeout,
            aws_request_id=aws_request_id,
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


# --------------------------------------------------------------------------- event loop

_thread_state = threading.local()


def ensure_event_loop() -> asyncio.AbstractEventLoop:
    """Give the calling thread its own asyncio event loop, once, and return it.

    Mangum runs the app on ``asyncio.get_event_loop()``. Lambda calls handlers on the
    main thread, but the gateway and the concurrency tests call them from worker
    threads, where there is no loop unless one is set: one loop per thread mirrors one
    loop per Lambda container.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _thread_state.loop = loop
        asyncio.set_event_loop(loop)
    return loop


def close_event_loop() -> None:
    """Close the loop ``ensure_event_loop`` gave this thread (a worker thread's last act)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    if loop is not None:
        _thread_state.loop = None
        asyncio.set_event_loop(None)
        loop.close()


def call(handler: LambdaHandler, event: Any, context: Any = None) -> Any:
    """Call a handler as the runtime does, on a thread with an event loop; the event is
    passed as is and the result returned as is (``invoke`` adds Lambda's JSON round trip)."""
    ensure_event_loop()
    return handler(event, LambdaContext() if context is None else context)


# --------------------------------------------------------------------------- loading

# Keyed by more than the logical id: two templates (a test fixture and the real one) may
# both have an "EchoFunction" with different code.
_loaded: dict[tuple[str, Path, str], tuple[types.ModuleType, LambdaHandler]] = {}
_loaded_lock = threading.Lock()
# What each loaded module was loaded as, so FunctionClient can build its contexts.
_origins: dict[str, FunctionSpec] = {}
_PACKAGE_ROOT = "lambda_functions"  # cached: one warm container per function
_FRESH_ROOT = "lambda_containers"  # fresh=True: a new cold container on every load


def _ensure_package(name: str) -> None:
    # Empty placeholder packages: they give each function its own module namespace but
    # no __path__ entries, so a relative import fails here just as it does on Lambda
    # (where handler.py is a top-level module).
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package


def _import(function: FunctionSpec, root: str, package: str) -> tuple[types.ModuleType, LambdaHandler]:
    # Lambda accepts both "pkg.module.fn" and "pkg/module.fn".
    module_path, attribute = function.handler.replace("/", ".").rsplit(".", 1)
    relative = Path(*module_path.split("."))
    source = function.code_uri / relative.with_suffix(".py")
    if not source.is_file() and (function.code_uri / relative / "__init__.py").is_file():
        source = function.code_uri / relative / "__init__.py"
    if not source.is_file():
        raise ImportError(f"{function.function_name}: handler module not found: {source}")
    _ensure_package(root)
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
    _origins[module_name] = function
    return module, handler


def _load(function: FunctionSpec) -> tuple[types.ModuleType, LambdaHandler]:
    key = (function.function_name, function.code_uri, function.handler)
    cached = _loaded.get(key)
    if cached is not None:
        return cached
    with _loaded_lock:
        cached = _loaded.get(key)
        if cached is None:
            cached = _import(function, _PACKAGE_ROOT, f"{_PACKAGE_ROOT}.{function.function_name}")
            _loaded[key] = cached
        return cached


def load_handler(function: FunctionSpec) -> LambdaHandler:
    """Import the function's handler from its CodeUri, once per function.

    Each function gets its own module name (``lambda_functions.<LogicalId>.handler``),
    so two functions' ``handler.py`` never collide in ``sys.modules``. Nothing is added
    to ``sys.path``: shared code comes from the ``reservations`` package, as in the layer.
    """
    return _load(function)[1]


def load_module(function: FunctionSpec, *, fresh: bool = False) -> types.ModuleType:
    """The module ``load_handler`` imports (the same one, warm), or with ``fresh=True`` a
    new import under a new name: one call = one cold container.

    A fresh container reads the environment anew: the cached settings are forgotten first.
    """
    if not fresh:
        return _load(function)[0]
    from reservations.config import settings_from_environment

    settings_from_environment.cache_clear()
    package = f"{_FRESH_ROOT}.{function.function_name}_{uuid.uuid4().hex}"
    return _import(function, _FRESH_ROOT, package)[0]


def clear_handler_cache() -> None:
    """Forget loaded handlers (tests use it to get a fresh "cold start"), and the settings
    they were built from: the next cold start reads the environment anew, as a fresh
    container does (a test that loaded a handler before another set DATABASE_URL would
    otherwise hand its cached settings to every handler loaded after)."""
    from reservations.config import settings_from_environment

    settings_from_environment.cache_clear()
    with _loaded_lock:
        for name in [n for n in sys.modules if n == _PACKAGE_ROOT or n.startswith(f"{_PACKAGE_ROOT}.")]:
            del sys.modules[name]
            _origins.pop(name, None)
        _loaded.clear()


@functools.lru_cache(maxsize=8)
def _template_functions(template: Path, _mtime_ns: int) -> tuple[TemplateFunction, ...]:
    return tuple(load_functions(template))


def find_function(name: str, template: Path = TEMPLATE) -> TemplateFunction:
    """The template's function called ``name``: its logical id (``AuthFunction``) or its
    CodeUri folder's name (``auth`` for ``functions/auth/``)."""
    path = Path(template).resolve()
    functions = _template_functions(path, path.stat().st_mtime_ns)
    by_id = [f for f in functions if f.function_name == name]
    found = by_id or [f for f in functions if f.code_uri.name == name]
    if len(found) != 1:
        known = ", ".join(f"{f.function_name} ({f.code_uri.name})" for f in functions)
        problem = "is ambiguous" if found else "is not a Python function"
        raise LookupError(f"{name!r} {problem} in {template}; it has {known}")
    return found[0]


def load_function(name: str, *, fresh: bool = False, template: Path = TEMPLATE) -> types.ModuleType:
    """The handler module of the template's function ``name`` (see ``find_function``).

    ``fresh=True`` is a new cold container on every call (what handler tests want);
    otherwise the warm one the gateway serves.
    """
    return load_module(find_function(name, template), fresh=fresh)


def invoke(function: FunctionSpec, event: Any, *, aws_request_id: str | None = None) -> Any:
    """Call a handler the way the Lambda runtime does; returns its JSON round-tripped result.

    The round trip matters: Lambda serialises the result to JSON, so a result that only
    works in-process (a datetime, a set) must fail here as it would on AWS.
    """
    handler = load_handler(function)
    context = LambdaContext.of(function, aws_request_id=aws_request_id)
    started = time.monotonic()
    result = call(handler, json.loads(json.dumps(event)), context)
    elapsed = time.monotonic() - started
    if elapsed > function.timeout:
        logger.warning(
            "%s took %.1f s, over its Timeout of %d s: Lambda would have stopped it (API Gateway: 500)",
            function.function_name,
            elapsed,
            function.timeout,
        )
    return json.loads(json.dumps(result))


# --------------------------------------------------------------------------- tests and benches


@functools.cache
def _sample_event() -> dict[str, Any]:
    sample: dict[str, Any] = json.loads(SAMPLE_EVENT.read_text())
    return sample


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
    source_ip: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The payload 2.0 event of one request, as from events/http-api-request.json.

    ``routeKey`` is ``"METHOD path"`` (the path as given: tests call a handler directly,
    so no route template applies), ``requestContext.requestId`` is new each time, and
    the client, host, time and trace id are the sample's. Unlike a gateway event, the
    body is always present and never base64-encoded, and ``cookies`` and
    ``queryStringParameters`` are present even when empty, as in the sample.
    """
    sample = _sample_event()
    sample_context = sample["requestContext"]
    # build_event adds the x-forwarded-* headers itself, from the values passed below.
    all_headers = {k: v for k, v in sample["headers"].items() if not k.startswith("x-forwarded-")}
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
    event = build_event(
        method=method,
        path=quote(path),  # build_event takes the path as it is on the request line
        query_string=urlencode(query or {}),
        headers=all_headers.items(),
        body=body.encode(),
        route_key=f"{method} {path}",
        source_ip=source_ip or sample_context["http"]["sourceIp"],
        protocol=sample_context["http"]["protocol"],
        scheme=sample["headers"]["x-forwarded-proto"],
        server_port=int(sample["headers"]["x-forwarded-port"]),
        request_id=request_id or uuid.uuid4().hex,
        now=datetime.fromtimestamp(sample_context["timeEpoch"] / 1000, UTC),
        stage=sample_context["stage"],
    )
    event["requestContext"]["apiId"] = sample_context["apiId"]
    event.setdefault("cookies", [])
    event.setdefault("queryStringParameters", {})
    event["body"], event["isBase64Encoded"] = body, False
    return event


@dataclass
class Response:
    """A handler's HTTP answer: lower-cased headers, the body parsed when it is JSON."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def json(self) -> Any:
        return self.body


class FunctionClient:
    """Calls a real Lambda handler the way API Gateway would (no HTTP, no gateway)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.handler: LambdaHandler = module.handler
        self.function: FunctionSpec | None = _origins.get(module.__name__)

    def close(self) -> None:
        """Release the container's resources (its pools), as a recycled container would."""
        container = getattr(self.module, "container", None)
        if container is not None:
            container.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Response:
        """``kwargs`` are those of ``http_event`` (json_body, form, raw_body, token, ...)."""
        context = LambdaContext() if self.function is None else LambdaContext.of(self.function)
        result = call(self.handler, http_event(method, path, **kwargs), context)
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

    def patch(self, path: str, **kwargs: Any) -> Response:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.call("DELETE", path, **kwargs)
