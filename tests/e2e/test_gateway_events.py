"""The local gateway over real HTTP (uvicorn on a free 127.0.0.1 port), and the embedded
Postgres it falls back to. The fixture template's echo handler answers with the event
it received, so each assertion is about what a function sees on AWS."""

from __future__ import annotations

import base64
import hashlib
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from reservations_dev.embedded_postgres import (
    EmbeddedPostgresError,
    ensure_postgres,
    postgres_reachable,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from reservations_dev.harness import clear_handler_cache
from reservations_dev.server import create_app, run_in_thread

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "gateway" / "template.yaml"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    clear_handler_cache()
    with run_in_thread(create_app(TEMPLATE)) as url:
        yield url
    clear_handler_cache()


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    event: dict[str, Any] = response.json()["event"]
    return event


def test_event_has_the_v2_shape_over_http(http: httpx.Client, base_url: str) -> None:
    response = http.get(
        "/echo/J%C3%BCrgen?x=1&x=2&empty=&q=a%20b",
        headers=[("X-Custom", "v"), ("X-Multi", "1"), ("X-Multi", "2"), ("Cookie", "a=1; b=2")],
    )
    event = echoed(response)
    port = base_url.rsplit(":", 1)[1]

    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /echo/{name}"
    assert event["rawPath"] == "/echo/Jürgen"
    assert event["rawQueryString"] == "x=1&x=2&empty=&q=a%20b"
    assert event["queryStringParameters"] == {"x": "1,2", "empty": "", "q": "a b"}
    assert event["pathParameters"] == {"name": "Jürgen"}
    assert event["cookies"] == ["a=1", "b=2"]
    headers = event["headers"]
    assert headers["x-custom"] == "v"
    assert headers["x-multi"] == "1,2"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["x-forwarded-port"] == port
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in headers
    assert all(name == name.lower() for name in headers)
    context = event["requestContext"]
    assert context["routeKey"] == "GET /echo/{name}"
    assert context["stage"] == "$default"
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert context["http"] == {
        "method": "GET",
        "path": "/echo/Jürgen",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": http.headers["user-agent"],
    }
    assert "body" not in event
    assert event["isBase64Encoded"] is False


def test_bodies_text_and_binary(http: httpx.Client) -> None:
    payload = bytes(range(256))

    json_event = echoed(http.post("/echo/x", json={"é": 1}))
    binary_event = echoed(http.post("/echo/x", content=payload, headers={"content-type": "application/octet-stream"}))

    assert (json_event["body"], json_event["isBase64Encoded"]) == ('{"é":1}', False)
    assert binary_event["isBase64Encoded"] is True
    assert base64.b64decode(binary_event["body"]) == payload


def test_greedy_route_over_http(http: httpx.Client) -> None:
    event = echoed(http.delete("/files/a/b/c.txt"))

    assert event["routeKey"] == "ANY /files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b/c.txt"}


def test_api_gateway_answers_over_http(http: httpx.Client) -> None:
    missing = http.get("/nowhere")
    wrong_method = http.put("/echo/x")
    failing = http.get("/boom")
    cookies = http.get("/shapes/cookies")

    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (404, {"message": "Not Found"})
    assert (failing.status_code, failing.json()) == (500, {"message": "Internal Server Error"})
    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]


def test_mangum_fastapi_app_through_the_gateway(http: httpx.Client) -> None:
    payload = bytes(range(256)) * 64

    item = http.get("/api/items/7?q=a&q=b", headers={"Cookie": "session=xyz", "X-Test": "t"})
    upload = http.post("/api/upload", content=payload, headers={"content-type": "application/octet-stream"})
    login = http.get("/api/login")
    missing = http.get("/api/nothing-here")

    assert item.json() == {
        "item_id": "7",
        "q": ["a", "b"],
        "path": "/api/items/7",
        "session": "xyz",
        "x_test": "t",
        "client": "127.0.0.1",
    }
    assert upload.json() == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert [c.split(";")[0] for c in login.headers.get_list("set-cookie")] == ["session=abc", "theme=dark"]
    assert missing.status_code == 404  # FastAPI's own 404, from inside the function
    assert missing.json() == {"detail": "Not Found"}


def test_twenty_parallel_requests_run_concurrently(base_url: str) -> None:
    # The handler makes every request wait until all 20 have arrived (a barrier with a
    # timeout): this only succeeds if the gateway runs them at the same time.
    parties, token = 20, uuid.uuid4().hex

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            return client.get("/api/rendezvous", params={"token": token, "parties": parties})

    with ThreadPoolExecutor(max_workers=parties) as pool:
        responses = list(pool.map(call, range(parties)))

    assert [r.status_code for r in responses] == [200] * parties
    assert sorted(r.json()["arrival"] for r in responses) == list(range(parties))


# --------------------------------------------------------------------------- postgres


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def select_one(url: str) -> tuple[Any, ...]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT 1, current_database()")).one()
    finally:
        engine.dispose()
    return tuple(row)


def test_embedded_postgres_starts_serves_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    try:
        server = start_embedded_postgres(data_dir)
    except EmbeddedPostgresError as exc:
        pytest.skip(f"pgserver cannot start Postgres on this platform: {exc}")

    try:
        url = server.url()
        assert url == f"postgresql+pg8000://postgres@/postgres?unix_sock={data_dir / '.s.PGSQL.5432'}"
        assert postgres_reachable(url)
        assert select_one(url) == (1, "postgres")
        assert ensure_postgres(url, data_dir) == url  # reachable: used as it is
    finally:
        server.stop()

    assert not postgres_reachable(url)


def test_ensure_postgres_falls_back_to_embedded_with_the_named_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = f"postgresql+pg8000://someone:secret@127.0.0.1:{free_port()}/gateway_e2e"
    data_dir = tmp_path / "pgdata"
    assert not postgres_reachable(unreachable)

    try:
        url = ensure_postgres(unreachable, data_dir)
    except EmbeddedPostgresError as exc:
        pytest.skip(f"pgserver cannot start Postgres on this platform: {exc}")
    try:
        assert url != unreachable
        assert select_one(url) == (1, "gateway_e2e")
        message = capsys.readouterr().out
        assert "embedded Postgres" in message
        assert "secret" not in message
    finally:
        stop_embedded_postgres(data_dir)

    assert not postgres_reachable(url)
