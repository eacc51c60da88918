from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import unique_email
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
