"""Throwaway databases for the test suites and the benchmarks (never shipped in the layer)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from reservations import migrations


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(str(url.database))
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


@contextmanager
def scratch_database(server_url: str, prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database `<prefix>_<random>` on the server, migrated unless told not to,
    dropped on exit even after an error (for test suites and benchmarks)."""
    url = make_url(server_url).set(database=f"{prefix}_{uuid.uuid4().hex[:10]}").render_as_string(hide_password=False)
    migrations.create_database_if_missing(url)
    try:
        if migrate:
            migrations.upgrade(url)
        yield url
    finally:
        drop_database(url)
