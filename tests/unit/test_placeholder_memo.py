"""The remembered placeholder rewrite answers exactly what pg8000's own scan answers, for
every paramstyle, the first time and when remembered."""

from __future__ import annotations

from typing import Any

import pg8000.legacy
import pytest
from pg8000.dbapi import convert_paramstyle

from reservations.adapters import pg_pipeline

CASES: list[tuple[str, str, Any]] = [
    ("format", "SELECT %s::bigint, 'it''s 100%%', %s -- a %s in a comment\n", (1, 2)),
    ("format", "SELECT $$ %s $$, %s", (7,)),
    ("pyformat", "SELECT %(a)s, %(b)s, %(a)s", {"a": 1, "b": 2, "unused": 3}),
    ("pyformat", "SELECT %s, %s", (1, 2)),
    ("named", "SELECT :first, x::int, :second, :first", {"first": 1, "second": 2}),
    ("qmark", "SELECT ?, '?', ?", (1, 2)),
    ("numeric", "SELECT :1, :2::text", (1, 2)),
]


@pytest.mark.parametrize(("style", "query", "args"), CASES)
def test_the_remembered_rewrite_is_pg8000s(style: str, query: str, args: Any) -> None:
    expected = convert_paramstyle(style, query, args)
    assert pg_pipeline.remembered_convert_paramstyle(style, query, args) == expected
    assert pg_pipeline.remembered_convert_paramstyle(style, query, args) == expected  # from the memo


def test_a_statement_with_other_arguments_gets_its_own_arguments() -> None:
    query = "SELECT :a, :b"
    assert pg_pipeline.remembered_convert_paramstyle("named", query, {"a": 1, "b": 2})[1] == (1, 2)
    assert pg_pipeline.remembered_convert_paramstyle("named", query, {"a": 3, "b": 4})[1] == (3, 4)


def test_pg8000s_cursor_uses_the_remembered_rewrite() -> None:
    assert pg8000.legacy.convert_paramstyle is pg_pipeline.remembered_convert_paramstyle
