"""pg8000 with each parameterised statement in one round trip, its placeholders
rewritten once per statement text.

pg8000 (1.31) sends a statement with parameters as Parse+Sync, waits; Describe+Sync and
Bind, waits; Execute+Sync, waits: three round trips where the extended query protocol
needs one. Measured on this project's machine: 470 µs against 204 µs for a one-row
SELECT on loopback; a reservation sends about twenty statements. pg8000 has no option for
this and offers no hook, so this subclass overrides that one method; everything else
(type conversion, result parsing, errors, COPY) is pg8000's own. psycopg 3 does this
natively and was weighed: it would change the driver under every query, its error
types and its timeouts (pg8000's bounds every socket read, which the API relies on).

Correctness rests on the protocol: after an error the server skips every message up to
Sync and answers ReadyForQuery, so an error in Parse, Bind or Execute is reported once,
by the single Sync, exactly as pg8000 reports it now.

pg8000's cursor also opens every transaction with its own round trip: ``begin
transaction`` as a simple query, answered before the first statement is sent. The
connection holds that BEGIN back and sends it in the same flush as the transaction's
first statement (or its COMMIT), then reads both answers in order: one round trip fewer
per transaction. A BEGIN still held when the transaction ends unsent (a rollback before
any statement, an autocommit switch) is dropped.

pg8000 parses timestamps and dates with ``strptime`` (about 8 µs a value, several per
ORM row); ``fromisoformat`` reads what Postgres writes (ISO DateStyle) in 0.15 µs, and
anything it cannot read (infinity, years past 9999, BC) still goes to pg8000's parser.

pg8000 also rewrites placeholders (``%s`` to ``$1``) by scanning every statement character
by character in Python: 0.1-0.4 ms for the ORM's long SELECTs, a dozen times per
reservation. The rewrite depends only on the style and the text, so it is remembered per
text. pg8000's legacy cursor looks the function up in its module on every execute, which
is where the memoised one is installed (at import of this module; same results).
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Any

import pg8000.legacy
from pg8000.converters import DATE, TIMESTAMP, TIMESTAMPTZ, date_in, timestamp_in, timestamptz_in
from pg8000.core import NULL_BYTE, SYNC_MSG, Context, _flush, _write, make_params
from pg8000.dbapi import convert_paramstyle
from pg8000.legacy import Connection

BEGIN = "begin transaction"  # what pg8000's cursor sends, verbatim


def read_timestamptz(text: str) -> Any:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return timestamptz_in(text)


def read_timestamp(text: str) -> Any:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return timestamp_in(text)


def read_date(text: str) -> Any:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return date_in(text)


def remembered_convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
    """`pg8000.dbapi.convert_paramstyle`, the scan done once per (style, text): positional
    styles pass the arguments through; named ones pick them by the remembered names."""
    statement, names = _rewrite(style, query)
    return statement, args if names is None else tuple(args[name] for name in names)


# Statement texts are few (SQLAlchemy compiles each statement shape once), though IN lists
# of varying length make more; bounded all the same.
@functools.lru_cache(maxsize=4096)
def _rewrite(style: str, query: str) -> tuple[str, tuple[Any, ...] | None]:
    """The statement and, for named styles, the names in placeholder order (found by
    asking pg8000's own scan for them)."""

    class Names(dict[Any, Any]):
        def __missing__(self, key: Any) -> Any:
            return key

    statement, names = convert_paramstyle(style, query, Names())
    # Positional styles answer the arguments unchanged (here the empty Names mapping).
    return statement, None if isinstance(names, Names) else tuple(names)


pg8000.legacy.convert_paramstyle = remembered_convert_paramstyle


class PipelinedConnection(Connection):  # type: ignore[misc]  # pg8000 ships no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held_begin = False
        super().__init__(*args, **kwargs)
        for oid, parse in ((TIMESTAMPTZ, read_timestamptz), (TIMESTAMP, read_timestamp), (DATE, read_date)):
            self.register_in_adapter(oid, parse)

    def execute_simple(self, statement: str) -> Any:
        if statement == BEGIN and self._sock is not None:
            self._held_begin = True
            return Context(statement)
        begin = self._send_held_begin()
        context = Context(statement)
        self.send_QUERY(statement)
        _flush(self._sock)
        self._read_answers(begin, context)
        return context

    def execute_unnamed(self, statement: str, vals: Any = (), oids: Any = (), stream: Any = None) -> Any:
        if stream is not None or self._sock is None:
            # COPY keeps pg8000's own exchange; a closed connection raises as pg8000 does.
            if self._sock is not None:
                self._send_held_begin(flush=True)
            return super().execute_unnamed(statement, vals=vals, oids=oids, stream=stream)
        params = make_params(self.py_types, vals)  # a value it cannot send fails here, before anything is written
        begin = self._send_held_begin()
        context = Context(statement)
        self.send_PARSE(NULL_BYTE, statement, oids)
        self.send_DESCRIBE_STATEMENT(NULL_BYTE)
        self.send_BIND(NULL_BYTE, params)
        self.send_EXECUTE()
        _write(self._sock, SYNC_MSG)
        _flush(self._sock)
        self._read_answers(begin, context)
        return context

    def rollback(self) -> None:
        self._held_begin = False  # a transaction with no statement sent has nothing to undo
        super().rollback()

    def _send_held_begin(self, *, flush: bool = False) -> Any:
        """Write the held BEGIN ahead of the next statement (unflushed unless ``flush``);
        its answer's context, or None."""
        if not self._held_begin:
            return None
        self._held_begin = False
        if self.autocommit:
            return None
        begin = Context(BEGIN)
        self.send_QUERY(BEGIN)
        if flush:
            _flush(self._sock)
            self.handle_messages(begin)
            return None
        return begin

    def _read_answers(self, begin: Any, context: Any) -> None:
        """The BEGIN's answer, if one was sent, then the statement's: both are read before
        either error is raised, so the connection stays in step."""
        failed_begin = None
        if begin is not None:
            try:
                self.handle_messages(begin)
            except Exception as error:  # raised below, once the statement's answer is read
                failed_begin = error
        self.handle_messages(context)
        if failed_begin is not None:
            raise failed_begin


def connect(*args: Any, **kwargs: Any) -> PipelinedConnection:
    """`pg8000.connect`, answering the pipelined connection (same arguments)."""
    return PipelinedConnection(*args, **kwargs)
