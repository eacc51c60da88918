"""The engine's pg8000 connections send a parameterised statement in one round trip, and
a failure at any step of the extended protocol is reported as pg8000 reports it, leaving
the connection in step for the next statement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from reservations.adapters.db import make_engine, sqlstate


class CountingSocket:
    """The driver's buffered socket, counting flushes: each is one wait for the server."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@pytest.fixture
def connection(database_url: str) -> Iterator[Connection]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def test_a_parameterised_statement_is_one_round_trip(connection: Connection) -> None:
    connection.exec_driver_sql("SELECT 1").scalar_one()  # BEGIN is sent before this one
    driver: Any = connection.connection.driver_connection
    counting = CountingSocket(driver._sock)
    driver._sock = counting
    try:
        row = connection.exec_driver_sql("SELECT %s::bigint + 1, %s::text", (41, "x")).one()
    finally:
        driver._sock = counting.wrapped
    assert tuple(row) == (42, "x")
    assert counting.flushes == 1


@pytest.mark.parametrize(
    ("statement", "parameters", "state"),
    [
        ("SELEC %s", (1,), "42601"),  # fails at Parse
        ("SELECT %s::integer", ("not a number",), "22P02"),  # fails at Bind
        ("SELECT 1 / %s::integer", (0,), "22012"),  # fails at Execute
    ],
)
def test_a_failure_at_any_step_is_reported_and_the_connection_stays_in_step(
    connection: Connection, statement: str, parameters: tuple[object, ...], state: str
) -> None:
    with pytest.raises(DBAPIError) as failure:
        connection.exec_driver_sql(statement, parameters)
    assert sqlstate(failure.value) == state
    connection.rollback()
    # The next statements read their own answers, not leftovers of the failed exchange.
    for value in (7, 8):
        assert connection.exec_driver_sql("SELECT %s::integer * 2", (value,)).scalar_one() == value * 2


def counted(connection: Connection) -> CountingSocket:
    driver: Any = connection.connection.driver_connection
    counting = CountingSocket(driver._sock)
    driver._sock = counting
    return counting


def test_a_transaction_opens_with_its_first_statement_in_one_round_trip(connection: Connection) -> None:
    connection.exec_driver_sql("SELECT 1")
    connection.rollback()  # the next statement is a transaction's first
    counting = counted(connection)
    first = connection.exec_driver_sql("SELECT txid_current()").scalar_one()
    second = connection.exec_driver_sql("SELECT txid_current()").scalar_one()
    assert counting.flushes == 2  # BEGIN went with the first statement
    assert first == second  # and both ran in that one transaction
    connection.rollback()
    assert connection.exec_driver_sql("SELECT txid_current()").scalar_one() != first


class Unsendable:
    def __str__(self) -> str:
        raise ValueError("this value cannot be sent")


def test_a_statement_that_cannot_be_sent_leaves_nothing_behind(connection: Connection) -> None:
    connection.exec_driver_sql("SELECT 1")
    connection.rollback()
    with pytest.raises(ValueError, match="cannot be sent"):
        connection.exec_driver_sql("SELECT %s::text", (Unsendable(),))
    connection.rollback()
    # Neither its statement nor the transaction's BEGIN went out later with another one.
    autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
    assert autocommit.exec_driver_sql("SELECT %s::integer * 2", (21,)).scalar_one() == 42
    first = autocommit.exec_driver_sql("SELECT txid_current()").scalar_one()
    assert autocommit.exec_driver_sql("SELECT txid_current()").scalar_one() != first  # no transaction open
