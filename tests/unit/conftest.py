"""Unit tests are pure: any attempt to open a network connection fails the test."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


class NetworkAccessInUnitTest(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkAccessInUnitTest("unit tests must not open sockets; move this test to integration/")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
