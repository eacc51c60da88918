"""What the local tools read from template.yaml: functions, HttpApi routes, schedules.

The template is the source of truth for what is deployed, so the gateway, the harness and
the scripts take every function's ``CodeUri``, ``Handler``, ``Timeout``, ``MemorySize``
and events from it (``Globals`` merged in) rather than from a list of their own.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

logger = logging.getLogger("reservations_dev.gateway")  # the local gateway's one log channel

DEFAULT_ROUTE_KEY = "$default"
ANY_METHOD = "ANY"
# Lambda's defaults when the template sets neither the function nor Globals.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", ANY_METHOD})

_PARAM_RE = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")


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
    """What it takes to load and run a handler: a Route, ScheduledFunction or TemplateFunction."""

    @property
    def function_name(self) -> str: ...
    @property
    def code_uri(self) -> Path: ...
    @property
    def handler(self) -> str: ...
    @property
    def timeout(self) -> int: ...
    @property
    def memory_size(self) -> int: ...


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
class TemplateFunction:
    """A Python function of the template, Globals merged in; a FunctionSpec."""

    function_name: str  # the logical id
    code_uri: Path
    handler: str
    timeout: int
    memory_size: int
    events: Mapping[str, Any]


def load_functions(template_path: Path) -> list[TemplateFunction]:
    """The functions the gateway can run in-process, Globals merged in, in template order."""
    return list(_python_functions(template_path))


def _python_functions(template_path: Path) -> Iterator[TemplateFunction]:
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
        yield TemplateFunction(
            function_name=logical_id,
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
            where = f"{fn.function_name}.Events.{event_name}"
            if path is None and method is None:
                path, method = DEFAULT_ROUTE_KEY, ANY_METHOD
            elif not (isinstance(path, str) and isinstance(method, str)):
                raise ValueError(f"{where}: HttpApi Path and Method must both be set (or neither, for $default)")
            else:
                method = method.upper()
                if method not in HTTP_METHODS:
                    raise ValueError(f"{where}: unsupported Method {method!r}")
                compile_path(path, where)
            route = Route(
                method=method,
                path=path,
                function_name=fn.function_name,
                code_uri=fn.code_uri,
                handler=fn.handler,
                timeout=fn.timeout,
                memory_size=fn.memory_size,
            )
            if route.route_key in seen:
                # API Gateway refuses to deploy this, so the local gateway refuses too.
                raise ValueError(f"{where}: route {route.route_key!r} is already served by {seen[route.route_key]}")
            seen[route.route_key] = fn.function_name
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
                logger.warning("%s.%s: schedule %r is not a rate(); skipped", fn.function_name, event_name, expression)
                continue
            amount, unit = int(match.group(1)), match.group(2).rstrip("s")
            raw_input = props.get("Input")
            schedules.append(
                ScheduledFunction(
                    function_name=fn.function_name,
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


# --------------------------------------------------------------------------- paths

LITERAL, PARAM, GREEDY = 0, 1, 2  # kinds of PathSegment


@dataclass(frozen=True)
class PathSegment:
    kind: int
    value: str  # the literal text, or the parameter name


def split_path(path: str) -> list[str]:
    stripped = path[1:] if path.startswith("/") else path
    return stripped.split("/") if stripped else []


def compile_path(path: str, where: str = "route") -> tuple[PathSegment, ...]:
    if not path.startswith("/"):
        raise ValueError(f"{where}: Path must start with '/', got {path!r}")
    segments: list[PathSegment] = []
    parts = split_path(path)
    for index, part in enumerate(parts):
        match = _PARAM_RE.match(part)
        if match is None:
            if "{" in part or "}" in part:
                # HTTP APIs only support whole-segment variables.
                raise ValueError(f"{where}: path variable must be a whole segment: {path!r}")
            segments.append(PathSegment(LITERAL, part))
        elif match.group(2):
            if index != len(parts) - 1:
                raise ValueError(f"{where}: greedy variable must be the last segment: {path!r}")
            segments.append(PathSegment(GREEDY, match.group(1)))
        else:
            segments.append(PathSegment(PARAM, match.group(1)))
    return tuple(segments)
