"""A private Postgres for machines that have none, via the ``pgserver`` package.

``ensure_postgres(url, data_dir)`` returns ``url`` when something answers there and
otherwise starts Postgres 16 from the binaries that ship inside ``pgserver`` (no Docker,
no system packages), returning a pg8000 URL over its Unix socket.

What pgserver does that callers should know:

- It listens on a Unix socket only (``<data_dir>/.s.PGSQL.5432``, or a folder under
  ``$XDG_RUNTIME_DIR``/``/tmp/runtime-<uid>`` when that path is too long), never TCP.
- As root it runs Postgres as a system user ``pgserver`` (created with ``useradd``) and
  adds ``o+rx`` to every parent folder of ``data_dir`` so that user can reach it.
- The server outlives no one on purpose: every process that calls ``ensure_postgres``
  on a data folder registers itself there, and the last one to exit normally stops the
  server (an ``atexit`` hook). A process killed with SIGKILL leaves it running; the
  next start reuses it.
- Its build ships no contrib extensions (only ``plpgsql`` and ``vector``): no
  ``btree_gist``, ``pgcrypto`` or ``citext``.

Dev-only: ``pgserver`` is not part of the Lambda layer and is imported lazily.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_PORT = 5432
SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """pgserver is missing or its Postgres could not start here."""


# --------------------------------------------------------------------------- probing


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def _query_value(parsed: URL, key: str) -> str | None:
    value = parsed.query.get(key)
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return value


def _socket_target(parsed: URL) -> Path | tuple[str, int]:
    """Where a client would connect: a Unix socket file or a (host, port)."""
    port = parsed.port or DEFAULT_PORT
    unix_sock = _query_value(parsed, "unix_sock")  # pg8000
    if unix_sock:
        return Path(unix_sock)
    # libpq/psycopg spell a socket folder as ?host=/dir (or a host that is a path).
    host = _query_value(parsed, "host") or parsed.host
    if host and host.startswith("/"):
        return Path(host) / f".s.PGSQL.{port}"
    # pg8000's default host; libpq would try its default socket folder instead, but
    # this project's URLs are pg8000 URLs.
    return (host or "localhost", port)


def postgres_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections where ``url`` points.

    A connect, not a login: when a server is there but the credentials are wrong, the
    caller should see that error, not silently get a different, embedded database.
    """
    parsed = _parse(url) if url else None
    if parsed is None:
        return False
    target = _socket_target(parsed)
    try:
        if isinstance(target, Path):
            # A stale socket file survives a killed server, so existence is not enough.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(target))
        else:
            with socket.create_connection(target, timeout=timeout):
                pass
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- server


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI)
            # and then falls back to /tmp/runtime-<uid>, which is fine for a lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pgserver
    except ImportError as exc:
        raise EmbeddedPostgresError(f"pgserver is not installed ({exc}); install requirements-dev.txt") from exc
    return pgserver


def _prune_dead_handles(pgserver: Any, data_dir: Path) -> None:
    """Forget registered processes that no longer exist.

    pgserver stops the server only when the exiting process is the last one listed
    in ``.handle_pids.json``; a process killed with SIGKILL stays listed forever and the
    server would then never be stopped again.
    """
    from pgserver.utils import DiskList

    handles = DiskList(data_dir / ".handle_pids.json")
    with pgserver.PostgresServer._lock:
        for pid in handles.get():
            if pid != os.getpid() and not _pid_alive(pid):
                handles.get_and_remove(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running pgserver instance; a context manager that stops it on exit."""

    data_dir: Path
    socket_path: Path
    pid: int
    _server: Any = field(repr=False, compare=False)

    def url(self, database: str = SUPERUSER) -> str:
        """A SQLAlchemy URL for pg8000 over the Unix socket (trust auth, superuser)."""
        return f"postgresql+pg8000://{SUPERUSER}@/{database}?unix_sock={self.socket_path}"

    def create_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists; True if it was created."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
                if exists:
                    return False
                connection.execute(text(f"CREATE DATABASE {_quote_identifier(name)}"))
                return True
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Release this process's handle; the server stops when no other process holds one."""
        with _registry_lock:
            _registry.pop(self.data_dir, None)
        self._server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_registry: dict[Path, EmbeddedPostgres] = {}
_registry_lock = threading.Lock()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the embedded server whose data lives in ``data_dir``.

    The first start runs ``initdb`` (about 0.5 s); later starts take about 0.1 s. If a
    server from an earlier process still runs on ``data_dir``, it is reused.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    with _registry_lock:
        running = _registry.get(data_dir)
        if running is not None:
            return running
        pgserver = _import_pgserver()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            if data_dir.exists():
                _prune_dead_handles(pgserver, data_dir)
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
            with pgserver.PostgresServer._lock:
                # get_server hands back a cached handle after an earlier stop() in this
                # process, without registering the process again: re-register, or another
                # process exiting would stop the server under us.
                server.global_process_id_list.get_and_add(os.getpid())
            info = server.get_postmaster_info()
        except Exception as exc:  # pgserver raises asserts, CalledProcessError, timeouts...
            log = data_dir / "log"
            raise EmbeddedPostgresError(
                f"embedded Postgres failed to start in {data_dir} ({exc!r}); see {log}"
            ) from exc
        if info.socket_path is None:
            raise EmbeddedPostgresError(f"embedded Postgres in {data_dir} reports no Unix socket")
        embedded = EmbeddedPostgres(data_dir=data_dir, socket_path=Path(info.socket_path), pid=info.pid, _server=server)
        _registry[data_dir] = embedded
        return embedded


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop what ``ensure_postgres`` started in ``data_dir`` (no-op if it started nothing)."""
    with _registry_lock:
        embedded = _registry.get(Path(data_dir).expanduser().resolve())
    if embedded is not None:
        embedded.stop()


def ensure_postgres(url: str, data_dir: Path) -> str:
    """``url`` if a server answers there, else the URL of an embedded one in ``data_dir``.

    The embedded server gets the database named in ``url`` (created if missing) and is
    reached as the ``postgres`` superuser; user and password in ``url`` are ignored.
    It stops when the last process using ``data_dir`` exits, or on
    ``stop_embedded_postgres(data_dir)``.
    """
    if postgres_reachable(url):
        return url
    parsed = _parse(url) if url else None
    database = (parsed.database if parsed is not None else None) or SUPERUSER
    embedded = start_embedded_postgres(data_dir)
    if database != SUPERUSER:
        embedded.create_database(database)
    shown = parsed.render_as_string(hide_password=True) if parsed is not None else "(no DATABASE_URL)"
    print(f"Postgres not reachable at {shown}: using embedded Postgres in {embedded.data_dir}", flush=True)
    return embedded.url(database)
