"""Route parity: the FastAPI apps, template.yaml, the local gateway and openapi.json
all describe the same API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from reservations_dev.harness import clear_handler_cache, load_module
from reservations_dev.server import create_app, run_in_thread
from reservations_dev.template import load_routes
from tests.infra.helpers import REPO, TEMPLATE

NOT_FOUND = {"message": "Not Found"}


def template_routes() -> dict[str, set[tuple[str, str]]]:
    routes: dict[str, set[tuple[str, str]]] = {}
    for route in load_routes(TEMPLATE):
        routes.setdefault(route.function_name, set()).add((route.method, route.path))
    return routes


def test_every_fastapi_route_is_in_the_template_and_vice_versa(database_url: str) -> None:
    declared = template_routes()
    assert set(declared) == {"AuthFunction", "ProvidersFunction", "AppointmentsFunction", "DocsFunction"}
    functions = {r.function_name: r for r in load_routes(TEMPLATE)}
    for function_name, routes in declared.items():
        app = load_module(functions[function_name], fresh=True).app
        # Explicit endpoints only: FastAPI's own /docs, /redoc and /openapi.json of each
        # group app are not routed by API Gateway (the docs function serves the merged one).
        served = {(method, r.path) for r in app.routes if isinstance(r, APIRoute) for method in r.methods - {"HEAD"}}
        only_app, only_template = sorted(served - routes), sorted(routes - served)
        assert served == routes, f"{function_name}: only in the app {only_app}, only in the template {only_template}"


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
            path = route.path.replace("{provider_id}", "1").replace("{appointment_id}", "1")
            response = client.request(route.method, path)
            # The function answered (an auth or validation error is fine): the gateway routed it.
            assert "apigw-requestid" in response.headers, (route.route_key, response.status_code)
            if response.headers["content-type"].startswith("application/json"):
                assert response.json() != NOT_FOUND, route.route_key
        for method, path in [("GET", "/redoc"), ("GET", "/docs/oauth2-redirect"), ("GET", "/register"), ("GET", "/")]:
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
