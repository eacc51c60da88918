"""Route parity: the FastAPI apps, template.yaml, the local gateway and openapi.json
all describe the same API."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from reservations_dev.harness import clear_handler_cache, load_module
from reservations_dev.server import create_app, run_in_thread
from reservations_dev.template import load_routes
from tests.infra.helpers import REPO, TEMPLATE

NOT_FOUND = {"message": "Not Found"}
PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def template_routes() -> dict[str, set[tuple[str, str]]]:
    routes: dict[str, set[tuple[str, str]]] = {}
    for route in load_routes(TEMPLATE):
        routes.setdefault(route.function_name, set()).add((route.method, route.path))
    return routes


def test_every_fastapi_route_is_in_the_template_and_vice_versa(database_url: str) -> None:
    declared = template_routes()
    assert set(declared) == {
        "AuthFunction",
        "ProvidersFunction",
        "AppointmentsFunction",
        "IntegrationsFunction",
        "DocsFunction",
    }
    functions = {r.function_name: r for r in load_routes(TEMPLATE)}
    for function_name, routes in declared.items():
        app = load_module(functions[function_name], fresh=True).app
        # Explicit endpoints only: FastAPI's own /docs, /redoc and /openapi.json of each
        # group app are not routed by API Gateway (the docs function serves the merged one).
        served = {(method, r.path) for r in app.routes if isinstance(r, APIRoute) for method in r.methods - {"HEAD"}}
        only_app, only_template = sorted(served - routes), sorted(routes - served)
        assert served == routes, f"{function_name}: only in the app {only_app}, only in the template {only_template}"


def test_every_endpoint_runs_on_the_event_loop_not_in_the_thread_pool(database_url: str) -> None:
    """A sync route makes FastAPI hop to a worker thread and back on every request
    (about 0.3 ms under Mangum); a Lambda container serves one request at a time, so
    every endpoint is ``async def`` and runs inline."""
    functions = {route.function_name: route for route in load_routes(TEMPLATE)}
    for name, function in functions.items():
        app = load_module(function).app
        endpoints = [r for r in app.routes if isinstance(r, APIRoute)]
        sync = sorted(r.path for r in endpoints if not asyncio.iscoroutinefunction(r.endpoint))
        assert endpoints, name
        assert not sync, f"{name}: sync endpoints {sync}"


def test_integrations_and_patch_me_are_routed_to_their_functions() -> None:
    declared = template_routes()
    assert declared["IntegrationsFunction"] == {
        ("POST", "/webhooks"),
        ("GET", "/webhooks"),
        ("GET", "/webhooks/{webhook_id}"),
        ("DELETE", "/webhooks/{webhook_id}"),
        ("POST", "/webhooks/{webhook_id}/rotate-secret"),
        ("POST", "/webhooks/{webhook_id}/ping"),
        ("GET", "/webhooks/{webhook_id}/deliveries"),
        ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"),
        ("POST", "/me/calendar-feed"),
        ("GET", "/calendar/{token}"),
    }
    assert {("GET", "/me"), ("PATCH", "/me")} <= declared["AuthFunction"]


def test_openapi_json_documents_every_api_route() -> None:
    document = json.loads((REPO / "openapi.json").read_text())
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    declared = {route for name, routes in template_routes().items() if name != "DocsFunction" for route in routes}
    assert documented == declared


@pytest.fixture(scope="module")
def gateway(database_url: str) -> Iterator[tuple[str, Any]]:
    clear_handler_cache()
    app = create_app(TEMPLATE)
    with run_in_thread(app) as url:
        yield url, app
    clear_handler_cache()


def test_local_gateway_serves_exactly_the_template_routes(gateway: tuple[str, Any]) -> None:
    url, app = gateway
    assert {(r.method, r.path) for r in app.state.routes} == {
        route for routes in template_routes().values() for route in routes
    }
    with httpx.Client(base_url=url, timeout=60) as client:
        for route in app.state.routes:
            path = PATH_PARAMETER.sub("1", route.path)
            response = client.request(route.method, path)
            # The function answered (an auth or validation error is fine): the gateway routed it.
            assert "apigw-requestid" in response.headers, (route.route_key, response.status_code)
            if response.headers["content-type"].startswith("application/json"):
                assert response.json() != NOT_FOUND, route.route_key
        for method, path in [
            ("GET", "/redoc/redoc.standalone.js.map"),
            ("GET", "/docs/oauth2-redirect"),
            ("GET", "/register"),
            ("GET", "/"),
        ]:
            response = client.request(method, path)
            assert (response.status_code, response.json()) == (404, NOT_FOUND), (method, path)


def test_local_gateway_serves_the_docs(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    with httpx.Client(base_url=url, timeout=60) as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200
        assert document.json() == json.loads((REPO / "openapi.json").read_text())
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "swagger-ui" in page.text and "openapi.json" in page.text
        redoc = client.get("/redoc")
        assert redoc.status_code == 200, redoc.text
        assert redoc.headers["content-type"].startswith("text/html")
        assert "redoc/redoc.standalone.js" in redoc.text and "openapi.json" in redoc.text


def test_docs_function_answers_503_without_the_redoc_bundle(tmp_path: Path, database_url: str) -> None:
    # A copy of the function without ./redoc: what a checkout gets before `make redoc`.
    source = REPO / "functions" / "docs"
    for name in ("handler.py", "openapi.json", "swagger-initializer.js", "redoc-initializer.js"):
        shutil.copyfile(source / name, tmp_path / name)  # follows the openapi.json symlink
    spec = importlib.util.spec_from_file_location(f"docs_without_redoc_{uuid.uuid4().hex}", tmp_path / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def get_all(*paths: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docs") as client:
            return [await client.get(path) for path in paths]

    page, bundle, initializer, docs, document = asyncio.run(
        get_all("/redoc", "/redoc/redoc.standalone.js", "/redoc/redoc-initializer.js", "/docs", "/openapi.json")
    )
    for response in (page, bundle):
        assert response.status_code == 503, (response.url, response.status_code)
        assert "make redoc" in response.text and "sam build" in response.text, response.url
    assert [r.status_code for r in (initializer, docs, document)] == [200, 200, 200]
