"""The local gateway without sockets: template parsing, route selection, the payload 2.0
event, response translation and the ASGI app (driven in-process through httpx)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from reservations_dev.events import MalformedResponse, build_event, to_http_response
from reservations_dev.harness import LambdaContext, clear_handler_cache
from reservations_dev.server import (
    MAX_PAYLOAD_BYTES,
    BackgroundTask,
    RouteTable,
    _DaemonWorkers,
    create_app,
    format_routes,
    scheduled_tasks,
)
from reservations_dev.template import DEFAULT_ROUTE_KEY, Route, load_routes, load_schedules, load_template

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "gateway"
TEMPLATE = FIXTURES / "template.yaml"
DEFAULT_TEMPLATE = FIXTURES / "template_default.yaml"
SAMPLE_EVENT = json.loads((REPO / "events" / "http-api-request.json").read_text())
TRACE_ID = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24}$")
REQUEST_TIME = re.compile(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$")


@pytest.fixture(autouse=True)
def cold_handlers() -> Iterator[None]:
    # Every test starts with no handler imported, like a fresh Lambda container.
    clear_handler_cache()
    yield
    clear_handler_cache()


class InProcessClient:
    """Drives the ASGI app in this process through httpx.ASGITransport (no socket).

    starlette.testclient would do, but it now asks for the httpx2 package; this keeps to
    httpx. The app's lifespan runs on entry/exit, and one event loop serves every call,
    so background tasks progress only while a call (or ``run``) is running.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._runner = asyncio.Runner()
        self._lifespan = app.router.lifespan_context(app)
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("testclient", 50000)), base_url="http://testserver"
        )

    def __enter__(self) -> InProcessClient:
        self._runner.run(self._lifespan.__aenter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._runner.run(self._client.aclose())
        self._runner.run(self._lifespan.__aexit__(None, None, None))
        self._runner.close()

    def run(self, awaitable: Any) -> Any:
        return self._runner.run(awaitable)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def client() -> Iterator[InProcessClient]:
    with InProcessClient(create_app(TEMPLATE)) as in_process:
        yield in_process


def route(method: str, path: str, function_name: str = "Fn") -> Route:
    return Route(method=method, path=path, function_name=function_name, code_uri=FIXTURES, handler="handler.handler")


def http_api(name: str, properties: str) -> str:
    """One HttpApi event, indented for write_template."""
    return f"        {name}:\n          Type: HttpApi\n          Properties: {properties}\n"


def write_template(directory: Path, events: str) -> Path:
    template = directory / "template.yaml"
    template.write_text(
        "Resources:\n"
        "  Fn:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      Runtime: python3.12\n"
        "      CodeUri: fn/\n"
        "      Handler: handler.handler\n"
        "      Events:\n" + events
    )
    return template


# --------------------------------------------------------------------------- template


def test_short_tags_load_as_their_long_json_form() -> None:
    template = load_template(TEMPLATE)

    assert template["Description"] == {"Fn::Sub": "local gateway fixture (${AWS::StackName})"}
    assert template["Conditions"]["IsProd"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["MODE"] == {"Fn::If": ["IsProd", "prod", "dev"]}
    assert variables["ZONE"] == {"Fn::Select": [0, {"Fn::GetAZs": ""}]}
    echo = template["Resources"]["EchoFunction"]["Properties"]
    assert echo["Role"] == {"Fn::GetAtt": ["EchoRole", "Arn"]}
    assert template["Resources"]["EchoRole"]["Properties"]["RoleName"] == {
        "Fn::Join": ["-", ["echo", {"Ref": "Stage"}]]
    }


def test_load_routes_reads_every_http_api_event_of_python_functions() -> None:
    routes = load_routes(TEMPLATE)

    assert [(r.method, r.path, r.function_name) for r in routes] == [
        ("GET", "/echo/{name}", "EchoFunction"),
        ("POST", "/echo/{name}", "EchoFunction"),  # `Method: post` in the template
        ("ANY", "/files/{proxy+}", "EchoFunction"),
        ("GET", "/providers/{provider_id}/time-slots", "EchoFunction"),
        ("GET", "/", "EchoFunction"),
        ("GET", "/providers/me/time-slots", "OtherFunction"),
        ("ANY", "/providers/{provider_id}/time-slots", "OtherFunction"),
        ("ANY", "/custom", "CustomHandlerFunction"),
        ("GET", "/shapes/{shape}", "ShapesFunction"),
        ("ANY", "/boom", "BoomFunction"),
        ("GET", "/powertools", "PowertoolsFunction"),
        ("ANY", "/api/{proxy+}", "MangumFunction"),
    ]  # NodeFunction (nodejs) is skipped; Schedule events are not routes


def test_routes_resolve_code_uri_and_merge_globals() -> None:
    by_function: dict[str, Route] = {}
    for r in load_routes(TEMPLATE):
        by_function.setdefault(r.function_name, r)

    echo, other, custom = (
        by_function["EchoFunction"],
        by_function["OtherFunction"],
        by_function["CustomHandlerFunction"],
    )
    assert echo.code_uri == FIXTURES / "echo"
    assert other.code_uri == FIXTURES / "other"  # `CodeUri: other` without a slash
    assert custom.code_uri == FIXTURES / "custom"  # `CodeUri: ./custom/`
    assert echo.handler == "handler.handler"  # from Globals
    assert custom.handler == "app.lambda_handler"  # the function's own wins
    assert (echo.timeout, echo.memory_size) == (6, 256)
    assert (other.timeout, other.memory_size) == (2, 1024)
    assert echo.route_key == "GET /echo/{name}"


def test_http_api_event_without_path_and_method_is_the_default_route() -> None:
    routes = load_routes(DEFAULT_TEMPLATE)

    assert [(r.method, r.path, r.route_key) for r in routes] == [
        ("ANY", "$default", DEFAULT_ROUTE_KEY),
        ("GET", "/named", "GET /named"),
    ]
    assert routes[0].is_default


def test_project_template_loads_and_every_route_points_at_a_function_folder() -> None:
    routes = load_routes(REPO / "template.yaml")

    keys = [r.route_key for r in routes]
    assert len(keys) == len(set(keys))
    assert ("POST /register", "AuthFunction") in {(r.route_key, r.function_name) for r in routes}
    for r in routes:
        assert r.code_uri.parent == REPO / "functions", r


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (http_api("E", "{Path: /x}"), "must both be set"),
        (http_api("E", "{Path: /x, Method: FETCH}"), "unsupported Method"),
        (http_api("E", "{Path: '/x-{id}', Method: GET}"), "whole segment"),
        (http_api("E", "{Path: '/{p+}/x', Method: GET}"), "last segment"),
        (http_api("E", "{Path: x, Method: GET}"), "start with '/'"),
        (http_api("A", "{Path: /x, Method: GET}") + http_api("B", "{Path: /x, Method: get}"), "already served"),
    ],
)
def test_templates_api_gateway_would_reject_are_refused(tmp_path: Path, events: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_routes(write_template(tmp_path, events))


def test_load_schedules_reads_rate_schedules_only() -> None:
    schedules = load_schedules(TEMPLATE)

    assert [(s.function_name, s.event_name, s.interval_seconds, s.input) for s in schedules] == [
        ("TickFunction", "EveryMinute", 60.0, None),
        ("TickFunction", "WithInput", 7200.0, {"job": "sweep"}),
    ]  # the cron() schedule and the disabled one are skipped


# --------------------------------------------------------------------------- matching


SLOTS = "/providers/{provider_id}/time-slots"


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(load_routes(TEMPLATE))


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/providers/me/time-slots", ("GET /providers/me/time-slots", "OtherFunction", {})),
        ("GET", "/providers/42/time-slots", (f"GET {SLOTS}", "EchoFunction", {"provider_id": "42"})),
        ("POST", "/providers/me/time-slots", (f"ANY {SLOTS}", "OtherFunction", {"provider_id": "me"})),
        ("DELETE", "/providers/42/time-slots", (f"ANY {SLOTS}", "OtherFunction", {"provider_id": "42"})),
        ("get", "/echo/x", ("GET /echo/{name}", "EchoFunction", {"name": "x"})),
        ("POST", "/echo/x", ("POST /echo/{name}", "EchoFunction", {"name": "x"})),
        ("GET", "/echo/J%C3%BCrgen%20K", ("GET /echo/{name}", "EchoFunction", {"name": "Jürgen K"})),
        ("GET", "/echo/a%2Fb", ("GET /echo/{name}", "EchoFunction", {"name": "a/b"})),
        ("PATCH", "/files/a/b/c.txt", ("ANY /files/{proxy+}", "EchoFunction", {"proxy": "a/b/c.txt"})),
        ("GET", "/files/x", ("ANY /files/{proxy+}", "EchoFunction", {"proxy": "x"})),
        ("GET", "/", ("GET /", "EchoFunction", {})),
        ("OPTIONS", "/custom", ("ANY /custom", "CustomHandlerFunction", {})),
    ],
)  # fmt: skip
def test_most_specific_route_wins(
    table: RouteTable, method: str, path: str, expected: tuple[str, str, dict[str, str]]
) -> None:
    match = table.match(method, path)

    assert match is not None
    assert (match.route.route_key, match.route.function_name, match.path_parameters) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/echo/x"),  # the path exists, but not for this method
        ("POST", "/"),
        ("GET", "/nope"),
        ("GET", "/echo"),  # a variable needs a segment
        ("GET", "/echo/"),  # ... and a non-empty one
        ("GET", "/echo/x/y"),
        ("GET", "/files"),  # a greedy variable needs at least one segment
        ("GET", "/files/"),
        ("GET", "/node"),  # served by a function the gateway cannot run
    ],
)
def test_no_route_is_a_miss(table: RouteTable, method: str, path: str) -> None:
    assert table.match(method, path) is None


def test_default_route_catches_only_what_nothing_else_matches() -> None:
    table = RouteTable(load_routes(DEFAULT_TEMPLATE))

    named = table.match("GET", "/named")
    other_method = table.match("POST", "/named")
    anything = table.match("DELETE", "/any/thing")
    assert named is not None and named.route.route_key == "GET /named"
    assert other_method is not None and other_method.route.is_default
    assert anything is not None and anything.route.is_default and anything.path_parameters == {}


def test_literal_beats_variable_beats_greedy_segment_by_segment() -> None:
    table = RouteTable(
        [
            route("ANY", "/{proxy+}", "Greedy"),
            route("GET", "/a/{x}/c", "VarLiteral"),
            route("GET", "/a/b/{y}", "LiteralVar"),
            route("GET", "/a/{proxy+}", "AGreedy"),
            route("ANY", "/a/b/c", "AnyLiteral"),
            route("GET", "/a/b/c", "GetLiteral"),
        ]
    )

    def winner(method: str, path: str) -> str:
        match = table.match(method, path)
        assert match is not None
        return match.route.function_name

    assert winner("GET", "/a/b/c") == "GetLiteral"
    assert winner("POST", "/a/b/c") == "AnyLiteral"
    assert winner("GET", "/a/b/d") == "LiteralVar"
    assert winner("GET", "/a/z/c") == "VarLiteral"
    assert winner("GET", "/a/z/z") == "AGreedy"
    assert winner("POST", "/a/z/z") == "Greedy"
    assert winner("GET", "/zzz") == "Greedy"


# --------------------------------------------------------------------------- event

FIXED_NOW = datetime(2026, 3, 12, 19, 3, 58, 390000, tzinfo=UTC)


def full_event(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "method": "post",
        "path": "/echo/J%C3%BCrgen",
        "query_string": "a=1&a=2&b=x%20y&flag",
        "headers": [
            ("Host", "api.example.com:3000"),
            ("User-Agent", "pytest-agent"),
            ("Accept", "text/plain"),
            ("accept", "application/json"),
            ("Cookie", "s=1; t=2"),
            ("cookie", "u=3"),
            ("Content-Type", "application/json"),
        ],
        "body": b'{"k": "v"}',
        "route_key": "POST /echo/{name}",
        "path_parameters": {"name": "Jürgen"},
        "source_ip": "10.0.0.9",
        "server_port": 3000,
        "request_id": "req-1",
        "now": FIXED_NOW,
    }
    arguments.update(overrides)
    return build_event(**arguments)


def test_event_top_level_fields() -> None:
    event = full_event()

    assert set(event) == {
        "version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers",
        "queryStringParameters", "requestContext", "pathParameters", "body", "isBase64Encoded",
    }  # fmt: skip
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /echo/{name}"
    assert event["rawPath"] == "/echo/Jürgen"  # HTTP APIs decode the path
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y&flag"  # ... but not the raw query
    assert event["cookies"] == ["s=1", "t=2", "u=3"]
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "flag": ""}
    assert event["pathParameters"] == {"name": "Jürgen"}
    assert event["body"] == '{"k": "v"}'
    assert event["isBase64Encoded"] is False


def test_event_headers_are_lower_case_comma_joined_and_without_cookies() -> None:
    headers = full_event()["headers"]

    assert headers == {
        "host": "api.example.com:3000",
        "user-agent": "pytest-agent",
        "accept": "text/plain,application/json",
        "content-type": "application/json",
        "x-forwarded-for": "10.0.0.9",
        "x-forwarded-proto": "http",
        "x-forwarded-port": "3000",
        "x-amzn-trace-id": headers["x-amzn-trace-id"],
    }
    assert TRACE_ID.match(headers["x-amzn-trace-id"])


def test_event_request_context() -> None:
    context = full_event()["requestContext"]

    assert context == {
        "accountId": "123456789012",
        "apiId": context["apiId"],
        "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {
            "method": "POST",
            "path": "/echo/Jürgen",
            "protocol": "HTTP/1.1",
            "sourceIp": "10.0.0.9",
            "userAgent": "pytest-agent",
        },
        "requestId": "req-1",
        "routeKey": "POST /echo/{name}",
        "stage": "$default",
        "time": "12/Mar/2026:19:03:58 +0000",
        "timeEpoch": 1773342238390,
    }
    assert context["apiId"]


def test_event_has_the_shape_of_the_project_sample_event() -> None:
    event = full_event()

    assert set(event["requestContext"]) == set(SAMPLE_EVENT["requestContext"])
    assert set(event["requestContext"]["http"]) == set(SAMPLE_EVENT["requestContext"]["http"])
    assert set(SAMPLE_EVENT) - set(event) == set()


def test_bare_get_leaves_optional_keys_out() -> None:
    event = build_event(method="GET", path="/me", headers=[("host", "localhost:3000")])

    assert set(event) == {"version", "routeKey", "rawPath", "rawQueryString", "headers", "requestContext",
                          "isBase64Encoded"}  # fmt: skip
    assert event["routeKey"] == event["requestContext"]["routeKey"] == DEFAULT_ROUTE_KEY
    assert event["rawQueryString"] == ""
    assert event["isBase64Encoded"] is False
    assert uuid.UUID(event["requestContext"]["requestId"])
    assert REQUEST_TIME.match(event["requestContext"]["time"])
    epoch_ms = event["requestContext"]["timeEpoch"]
    assert isinstance(epoch_ms, int)
    assert abs(epoch_ms / 1000 - datetime.now(UTC).timestamp()) < 60
    assert event["requestContext"]["http"]["userAgent"] == ""


@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/json", b'{"a": 1}', False),
        ("application/json; charset=utf-8", '{"é": 1}'.encode(), False),
        ("text/plain", "héllo".encode(), False),
        ("application/problem+json", b"{}", False),
        ("application/xml", b"<a/>", False),
        ("application/json", b"\xff\xfe not utf-8", True),
        ("application/octet-stream", bytes(range(256)), True),
        ("image/png", b"\x89PNG", True),
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),  # as HTTP APIs do
        ("multipart/form-data; boundary=x", b"--x--", True),
        (None, b"no content type", True),
    ],
)
def test_body_is_text_only_for_utf8_text_media_types(content_type: str | None, body: bytes, encoded: bool) -> None:
    headers = [("content-type", content_type)] if content_type else []
    event = build_event(method="POST", path="/x", headers=headers, body=body)

    assert event["isBase64Encoded"] is encoded
    assert (base64.b64decode(event["body"]) if encoded else event["body"].encode()) == body


def test_forwarded_for_appends_the_caller_and_domain_handles_ip_hosts() -> None:
    event = build_event(
        method="GET", path="/", headers=[("host", "[::1]:3000"), ("x-forwarded-for", "1.2.3.4")], source_ip="::1"
    )

    assert event["headers"]["x-forwarded-for"] == "1.2.3.4, ::1"
    assert (event["requestContext"]["domainName"], event["requestContext"]["domainPrefix"]) == ("::1", "::1")


# --------------------------------------------------------------------------- response


def header_values(response: Any, name: str) -> list[str]:
    return [v.decode() for k, v in response.raw_headers if k.decode() == name]


def test_full_response_with_cookies() -> None:
    response = to_http_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-Num": 5, "Content-Length": "999"},
            "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
            "body": "hi",
        }
    )

    assert response.status_code == 201
    assert response.body == b"hi"
    assert header_values(response, "set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert header_values(response, "content-type") == ["text/plain"]
    assert header_values(response, "x-num") == ["5"]
    assert header_values(response, "content-length") == ["2"]  # recomputed, not the handler's


def test_base64_body_is_decoded() -> None:
    payload = bytes(range(256))
    response = to_http_response(
        {"statusCode": 200, "body": base64.b64encode(payload).decode(), "isBase64Encoded": True}
    )

    assert response.body == payload


def test_multi_value_headers_and_empty_bodies() -> None:
    response = to_http_response({"statusCode": 204, "multiValueHeaders": {"X-Multi": ["1", "2"]}})

    assert response.status_code == 204
    assert response.body == b""
    assert header_values(response, "x-multi") == ["1", "2"]


@pytest.mark.parametrize(
    "result",
    ["hello", [1, 2], {"message": "no statusCode"}, None, 3],
)
def test_result_without_status_code_is_a_200_json_body(result: Any) -> None:
    response = to_http_response(result)

    assert response.status_code == 200
    assert json.loads(bytes(response.body)) == result
    assert header_values(response, "content-type") == ["application/json"]


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "two hundred"},
        {"statusCode": 99},
        {"statusCode": True},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": {"nested": 1}}},
        {"statusCode": 200, "cookies": "a=1"},
    ],
)
def test_malformed_results_are_refused(result: Any) -> None:
    with pytest.raises(MalformedResponse):
        to_http_response(result)


# --------------------------------------------------------------------------- context


def test_lambda_context_has_what_powertools_reads() -> None:
    context = LambdaContext(function_name="AuthFunction", memory_limit_in_mb=512, timeout_seconds=15)

    assert context.function_name == "AuthFunction"
    assert context.function_version == "$LATEST"
    assert context.memory_limit_in_mb == 512
    assert re.match(r"^arn:aws:lambda:[a-z0-9-]+:123456789012:function:AuthFunction$", context.invoked_function_arn)
    assert uuid.UUID(context.aws_request_id)
    assert context.log_group_name == "/aws/lambda/AuthFunction"
    assert 0 < context.get_remaining_time_in_millis() <= 15_000
    assert LambdaContext(function_name="f", timeout_seconds=0).get_remaining_time_in_millis() == 0


# --------------------------------------------------------------------------- app


def test_echo_round_trip(client: InProcessClient) -> None:
    response = client.get("/echo/hi?x=1", headers={"Cookie": "session=abc", "X-Test": "yes"})

    assert response.status_code == 200
    seen = response.json()
    event, context = seen["event"], seen["context"]
    assert event["routeKey"] == "GET /echo/{name}"
    assert event["pathParameters"] == {"name": "hi"}
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["cookies"] == ["session=abc"]
    assert event["headers"]["x-test"] == "yes"
    assert event["requestContext"]["requestId"] == response.headers["apigw-requestid"]
    assert context["function_name"] == "EchoFunction"
    assert context["memory_limit_in_mb"] == 256
    assert context["invoked_function_arn"].endswith(":function:EchoFunction")
    assert context["aws_request_id"] != event["requestContext"]["requestId"]
    assert 0 < context["remaining_ms"] <= 6000


def test_functions_with_the_same_file_name_get_their_own_modules(client: InProcessClient) -> None:
    echo = client.get("/echo/x").json()
    other = client.get("/providers/me/time-slots").json()

    assert echo["module"] == "lambda_functions.EchoFunction.handler"
    assert other["module"] == "lambda_functions.OtherFunction.handler"
    assert other == {
        "who": "other",
        "module": "lambda_functions.OtherFunction.handler",
        "route": "GET /providers/me/time-slots",
        "params": None,
    }
    assert (
        sys.modules["lambda_functions.EchoFunction.handler"]
        is not sys.modules["lambda_functions.OtherFunction.handler"]
    )


def test_function_level_handler_is_used(client: InProcessClient) -> None:
    response = client.post("/custom")

    assert (response.status_code, response.text) == (201, "custom ANY /custom")
    assert response.headers["content-type"] == "text/plain"


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("DELETE", "/echo/x"), ("GET", "/node")])
def test_unknown_route_or_method_is_api_gateways_404(client: InProcessClient, method: str, path: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_handler_exception_is_a_500_and_its_traceback_is_logged(
    client: InProcessClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="reservations_dev.gateway"):
        response = client.get("/boom")

    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}
    [record] = [r for r in caplog.records if r.name == "reservations_dev.gateway"]
    assert "BoomFunction" in record.getMessage()
    assert record.exc_info is not None
    assert "boom from the fixture handler" in caplog.text
    assert "Traceback" in caplog.text


@pytest.mark.parametrize(
    ("shape", "status", "body"),
    [
        ("string", 200, b'"hello"'),
        ("list", 200, b"[1, 2, 3]"),
        ("binary", 200, bytes(range(256))),
        ("empty", 204, b""),
        ("malformed", 500, b'{"message":"Internal Server Error"}'),
        ("bad-base64", 500, b'{"message":"Internal Server Error"}'),
        ("unserialisable", 500, b'{"message":"Internal Server Error"}'),  # Lambda could not send it as JSON
    ],
)
def test_result_shapes_through_the_app(client: InProcessClient, shape: str, status: int, body: bytes) -> None:
    response = client.get(f"/shapes/{shape}")

    assert (response.status_code, response.content) == (status, body)


def test_cookies_and_multi_value_headers_through_the_app(client: InProcessClient) -> None:
    cookies = client.get("/shapes/cookies")
    multi = client.get("/shapes/multi")

    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert cookies.headers["x-count"] == "5"
    assert multi.status_code == 202
    assert multi.headers.get_list("x-multi") == ["1", "2"]


def test_requests_over_the_payload_limit_are_refused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * 60
        yield b"a" * 60

    with InProcessClient(create_app(TEMPLATE, max_payload_bytes=100)) as small:
        at_limit = small.post("/echo/x", content=b"a" * 100, headers={"content-type": "text/plain"})
        over_limit = small.post("/echo/x", content=b"a" * 101, headers={"content-type": "text/plain"})
        streamed = small.post("/echo/x", content=chunks())  # chunked: no content-length to check

    assert at_limit.status_code == 200
    assert at_limit.json()["event"]["body"] == "a" * 100
    assert (over_limit.status_code, over_limit.json()) == (413, {"message": "Request Entity Too Large"})
    assert streamed.status_code == 413


def test_default_limit_is_api_gateways_10_mib(client: InProcessClient) -> None:
    response = client.post("/echo/x", content=b"a" * (MAX_PAYLOAD_BYTES + 1))

    assert response.status_code == 413


def test_powertools_logger_and_metrics_accept_the_context(client: InProcessClient) -> None:
    response = client.get("/powertools")

    assert response.status_code == 200
    assert response.json()["correlation_id"] == response.headers["apigw-requestid"]
    assert response.json()["remaining_ms"] > 0


def test_mangum_wrapped_fastapi_app(client: InProcessClient) -> None:
    response = client.get("/api/items/7?q=a&q=b", headers={"Cookie": "session=xyz", "X-Test": "t"})

    assert response.status_code == 200
    assert response.json() == {
        "item_id": "7",
        "q": ["a", "b"],
        "path": "/api/items/7",
        "session": "xyz",
        "x_test": "t",
        "client": "testclient",
    }


def test_handler_import_failure_is_a_500_and_retried_on_the_next_request(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    handler_file = tmp_path / "fn" / "handler.py"
    handler_file.write_text("raise ImportError('not yet')\n")
    template = write_template(tmp_path, http_api("E", "{Path: /x, Method: GET}"))

    with InProcessClient(create_app(template)) as test_client:
        failed = test_client.get("/x")
        handler_file.write_text("def handler(event, context):\n    return {'fixed': True}\n")
        fixed = test_client.get("/x")

    assert failed.status_code == 500
    assert fixed.json() == {"fixed": True}


def test_app_exposes_its_routes() -> None:
    app = create_app(TEMPLATE)

    assert app.state.routes == load_routes(TEMPLATE)
    assert isinstance(app.state.route_table, RouteTable)


def test_routes_table_for_start_up() -> None:
    table = format_routes(load_routes(DEFAULT_TEMPLATE))

    assert table.splitlines() == ["ANY $default -> EchoFunction", "GET /named   -> EchoFunction"]


def test_on_startup_runs_first_and_background_tasks_run_while_serving() -> None:
    calls: list[str] = []
    ticked = threading.Event()
    app = create_app(
        TEMPLATE,
        on_startup=[lambda: calls.append("startup")],
        background_tasks=[BackgroundTask("tick", 0.01, ticked.set, run_at_startup=True)],
    )

    with InProcessClient(app) as in_process:
        assert calls == ["startup"]
        # The task runs on the app's event loop, so let the loop run until it has ticked.
        assert in_process.run(asyncio.to_thread(ticked.wait, 10))


def test_scheduled_tasks_invoke_the_scheduled_function_with_eventbridge_events() -> None:
    every_minute, with_input = scheduled_tasks(TEMPLATE)

    assert every_minute.interval_seconds == 60
    assert every_minute.func() == {"ok": True, "function": "TickFunction"}
    assert with_input.func() == {"ok": True, "function": "TickFunction"}
    scheduled, constant = sys.modules["lambda_functions.TickFunction.handler"].EVENTS
    assert scheduled["detail-type"] == "Scheduled Event"
    assert scheduled["source"] == "aws.events"
    assert scheduled["detail"] == {}
    assert constant == {"job": "sweep"}


def test_a_scheduled_function_can_run_more_often_locally() -> None:
    # make dev runs the events function's pass every few seconds, not at its minute rate.
    every_two_seconds, with_input = scheduled_tasks(TEMPLATE, intervals={"TickFunction": 2})

    assert (every_two_seconds.interval_seconds, with_input.interval_seconds) == (2, 2)
    assert every_two_seconds.func() == {"ok": True, "function": "TickFunction"}


def test_workers_are_daemon_threads_with_their_own_event_loop() -> None:
    workers = _DaemonWorkers(max_workers=5)
    barrier = threading.Barrier(5)

    def probe() -> tuple[bool, bool, int]:
        barrier.wait(timeout=10)  # all five must run at once to get past this
        loop = asyncio.get_event_loop()
        return threading.current_thread().daemon, loop.is_closed(), threading.get_ident()

    futures = [workers.submit(probe) for _ in range(5)]
    results = [f.result(timeout=20) for f in futures]
    workers.shutdown()

    assert all(daemon and not closed for daemon, closed, _ in results)
    assert len({ident for *_, ident in results}) == 5
    with pytest.raises(RuntimeError):
        workers.submit(probe)


def test_named_stage_serves_under_its_prefix_and_passes_it_on_in_raw_path() -> None:
    with InProcessClient(create_app(TEMPLATE, stage="dev")) as staged:
        inside = staged.get("/dev/echo/x")
        outside = staged.get("/echo/x")

    event = inside.json()["event"]
    assert (event["routeKey"], event["rawPath"], event["requestContext"]["stage"]) == (
        "GET /echo/{name}",
        "/dev/echo/x",  # what a Mangum app sees on AWS behind a named stage
        "dev",
    )
    assert event["requestContext"]["http"]["path"] == "/dev/echo/x"
    assert (outside.status_code, outside.json()) == (404, {"message": "Not Found"})
