from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import Clock, unique_email
from tests.handlers.world import World
from tests.support import FunctionClient, load_function


@pytest.fixture(scope="module")
def auth(database_url: str) -> Iterator[FunctionClient]:
    client = FunctionClient(load_function("auth"))
    yield client
    client.close()


@pytest.fixture
def register(auth: FunctionClient) -> Callable[..., dict]:
    def _register(role: str = "patient", password: str = "correct-horse", **extra: str) -> dict:
        body = {"name": f"{role} user", "email": unique_email(role), "password": password, "role": role, **extra}
        response = auth.post("/register", json_body=body)
        assert response.status == 201, response.body
        return {**response.body, "password": password}

    return _register


@pytest.fixture
def login(auth: FunctionClient) -> Callable[[dict], dict]:
    def _login(user: dict) -> dict:
        response = auth.post("/token", form={"username": user["email"], "password": user["password"]})
        assert response.status == 200, response.body
        return response.body

    return _login


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    created = World(Clock(datetime(2027, 1, 4, 12, 0, tzinfo=UTC)))
    yield created
    for client in (created.auth, created.providers, created.appointments):
        client.close()
