from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.builders import create_admin, http_login, http_register
from tests.support import FunctionClient, load_function
from tests.world import container_of


@pytest.fixture(scope="module")
def auth(database_url: str) -> Iterator[FunctionClient]:
    client = FunctionClient(load_function("auth"))
    yield client
    client.close()


@pytest.fixture
def register(auth: FunctionClient) -> Callable[..., dict[str, Any]]:
    def _register(role: str = "patient", password: str = "correct-horse", **extra: str) -> dict[str, Any]:
        return http_register(auth, role, password, **extra)

    return _register


@pytest.fixture
def login(auth: FunctionClient) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda user: http_login(auth, user)


@pytest.fixture
def admin_token(auth: FunctionClient) -> str:
    """A further admin's token, made through the auth container's use cases."""
    return create_admin(container_of(auth)).token
