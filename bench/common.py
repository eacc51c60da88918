"""Shared helpers of the bench suites: timing, percentiles, tables, a throwaway database,
the bench environment and API Gateway v2 events for the real Lambda handlers.

Timings use `time.perf_counter_ns`; every series starts with warm-up calls that are not
recorded. Nothing here asserts a timing: suites report figures and ratios only.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from reservations_dev import harness
from reservations_dev.harness import LambdaContext, http_event  # noqa: F401 - the suites import them from here

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"  # the benches' own Redis database
BENCH_SECRET = "bench-secret-key-that-is-long-enough-0123456789"  # noqa: S105 - local benches only

Table = dict[str, Any]


class SuiteSkipped(Exception):
    """Raise from a suite's run() when it cannot run here (e.g. nothing built yet)."""


# --- timing ----------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in 0..100."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one series, in nanoseconds."""

    samples_ns: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.samples_ns)

    @property
    def p50_ns(self) -> float:
        return percentile(self.samples_ns, 50)

    @property
    def p99_ns(self) -> float:
        return percentile(self.samples_ns, 99)

    @property
    def mean_ns(self) -> float:
        return sum(self.samples_ns) / len(self.samples_ns) if self.samples_ns else math.nan

    @property
    def min_ns(self) -> float:
        return min(self.samples_ns) if self.samples_ns else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "runs": self.runs,
            "p50_ms": self.p50_ns / 1e6,
            "p99_ms": self.p99_ns / 1e6,
            "mean_ms": self.mean_ns / 1e6,
            "min_ms": self.min_ns / 1e6,
        }


def measure(call: Callable[[], object], *, runs: int, warmup: int = 3) -> Timing:
    """Time `runs` calls after `warmup` unrecorded ones. The garbage collector stays on
    (real requests pay for it too); a collection before the series starts it clean."""
    for _ in range(warmup):
        call()
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        started = clock()
        call()
        samples.append(clock() - started)
    return Timing(tuple(samples))


def measure_interleaved(calls: Sequence[Callable[[], object]], *, runs: int, warmup: int = 3) -> list[Timing]:
    """Time `runs` calls of each of `calls`, taking turns: one of each per round, the order
    reversed every other round. A ratio of two series measured one after the other also
    measures how the machine drifted in between (this one's hello moved 40 % between two
    suites of one run); taking turns puts the drift on both sides alike."""
    for _ in range(warmup):
        for each in calls:
            each()
    gc.collect()
    samples: list[list[int]] = [[] for _ in calls]
    clock = time.perf_counter_ns
    order = list(range(len(calls)))
    for round_number in range(runs):
        for index in order if round_number % 2 == 0 else reversed(order):
            started = clock()
            calls[index]()
            samples[index].append(clock() - started)
    return [Timing(tuple(series)) for series in samples]


def measure_prepared[T](prepare: Callable[[], T], call: Callable[[T], object], *, runs: int, warmup: int = 3) -> Timing:
    """Like `measure`, with an untimed `prepare()` before each call (a fresh slot, the
    next appointment id, a bumped cache version) whose result the call receives."""
    for _ in range(warmup):
        call(prepare())
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        argument = prepare()
        started = clock()
        call(argument)
        samples.append(clock() - started)
    return Timing(tuple(samples))


# --- formatting ------------------------------------------------------------------------


def ms(ns: float, digits: int = 2) -> str:
    return f"{ns / 1e6:.{digits}f}"


def us(ns: float, digits: int = 1) -> str:
    return f"{ns / 1e3:.{digits}f}"


def ratio(value: float, baseline: float) -> str:
    """`value / baseline` as "1.8x" (two significant decimals below 10x)."""
    if not baseline or math.isnan(value) or math.isnan(baseline):
        return "n/a"
    factor = value / baseline
    return f"{factor:.2f}x" if factor < 10 else f"{factor:.0f}x"


def count(value: int) -> str:
    return f"{value:,}"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: str = "") -> Table:
    return {"title": title, "columns": list(columns), "rows": [list(row) for row in rows], "notes": notes}


def markdown(result: Table) -> str:
    columns = [str(c) for c in result["columns"]]
    rows = [["" if cell is None else str(cell).replace("|", "\\|") for cell in row] for row in result["rows"]]
    lines = [f"### {result['title']}", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    if result.get("notes"):
        lines.extend(["", str(result["notes"])])
    return "\n".join(lines)


# --- machine ---------------------------------------------------------------------------


def server_url() -> str:
    from reservations.config import normalise_database_url

    return normalise_database_url(os.environ.get("BENCH_DATABASE_URL") or DEFAULT_SERVER_URL)


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def postgres_version(url: str | None = None) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url or server_url(), connect_args={"timeout": 5})
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())
    except Exception as error:
        return f"unavailable ({type(error).__name__})"
    finally:
        engine.dispose()


def redis_version(url: str | None = None) -> str:
    try:
        import redis

        client = redis.Redis.from_url(url or redis_url(), socket_connect_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception as error:
        return f"unavailable ({type(error).__name__})"


def machine_info() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": platform.python_version(),
        "postgres": postgres_version(),
        "redis": redis_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


# --- database and environment ---------------------------------------------------------


@contextlib.contextmanager
def throwaway_database(prefix: str = "reservations_bench") -> Iterator[str]:
    """A new, migrated database on the bench server, dropped on exit (even on errors)."""
    from reservations_dev import databases

    with databases.scratch_database(server_url(), prefix) as url:
        yield url


@contextlib.contextmanager
def patched_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block, restore the previous ones after, and
    clear the cached settings both ways so handlers loaded inside see the new values."""
    from reservations.config import settings_from_environment

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    settings_from_environment.cache_clear()
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        settings_from_environment.cache_clear()


def bench_environment(database_url: str, *, redis: str = "", **extra: str) -> dict[str, str]:
    """Variables for handlers under bench: local app env, no X-Ray, cheap password hashing
    (only fixture users are hashed; no timed path hashes a password)."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis,
        "JWT_SECRET_KEY": BENCH_SECRET,
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        # The limiter still runs (its Redis round trips are timed); the bench's one client
        # address and its few patients must not be what it measures.
        "RATE_LIMIT_PER_ADDRESS": "1000000/minute",
        "RATE_LIMIT_PER_ACCOUNT": "1000000/minute",
        "MAX_FUTURE_APPOINTMENTS_PER_PATIENT": "1000",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "ReservationsBench",
        "POWERTOOLS_SERVICE_NAME": "reservations",
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        **extra,
    }


# --- Lambda handlers -------------------------------------------------------------------


def load_function(name: str) -> ModuleType:
    """functions/<name>/handler.py as a new module: one call = one cold container."""
    return harness.load_function(name, fresh=True)


def release_function(module: ModuleType) -> None:
    """Dispose a loaded function's connection pool, as a recycled container would."""
    module.container.close()


def pin_clock(module: ModuleType, now: datetime) -> ModuleType:
    """Pin a loaded function's clock (its module-level `Container`), so booking rules and
    tokens behave the same on every run."""
    module.container.clock = lambda: now
    return module


def fresh_function(name: str, now: datetime, **environment: str) -> ModuleType:
    """A fresh, clock-pinned function container, with extra variables while it loads
    (settings are read at import)."""
    with patched_environ(**environment):
        module = load_function(name)
    return pin_clock(module, now)


def issue_token(container: Any, user_id: int, role: str, now: datetime, ttl: timedelta = timedelta(hours=12)) -> str:
    """An access token from a `reservations.composition.Container`'s codec, without a sign-in."""
    return str(container.token_codec().issue_access(user_id=user_id, role=role, token_version=0, now=now, ttl=ttl))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what the handlers print (Powertools' EMF metrics line) and its warnings,
    so the bench output stays readable; the printing itself still happens."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# One context for every call, so building it is not part of what a series times; it
# counts down from Lambda's longest Timeout, which no bench run reaches.
_CONTEXT = LambdaContext(function_name="bench-function", memory_limit_in_mb=512, timeout_seconds=900)


def invoke(handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any]) -> dict[str, Any]:
    """Call a handler the way the Lambda runtime does (the event is not modified)."""
    result: dict[str, Any] = harness.call(handler, event, _CONTEXT)
    return result


def body_of(response: dict[str, Any]) -> Any:
    raw = response.get("body") or ""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def code_of(response: dict[str, Any]) -> str:
    """The error `code` of a JSON error body ("" for anything else)."""
    body = body_of(response)
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def call(handler: Callable[..., dict[str, Any]], event: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    """`invoke`, raising unless the handler answers `expect`."""
    response = invoke(handler, event)
    if response["statusCode"] != expect:
        raise RuntimeError(f"{event['routeKey']} answered {response['statusCode']}: {response.get('body')}")
    return response


def hello_handlers() -> tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]:
    """A hello-world FastAPI app behind bare Mangum, and behind the project's wrapper
    (Mangum + Powertools logger, metrics and tracer) that every function uses. The route
    is sync, FastAPI's plain style and the baseline issue 15's goals were set against;
    `async_hello_handler` is the same with an async route, as the project's are."""
    from fastapi import FastAPI
    from mangum import Mangum

    from reservations.http.lambda_entry import make_lambda_handler

    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    return Mangum(app, lifespan="off"), make_lambda_handler(app)


def async_hello_handler() -> Callable[..., dict[str, Any]]:
    """The bare hello with an `async def` route: no hop to FastAPI's thread pool."""
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return Mangum(app, lifespan="off")


# --- fixture rows ----------------------------------------------------------------------

NO_HASH = "not-a-hash"  # accounts that never sign in (tokens are issued directly)


def insert_users(
    engine: Any, role: str, names: Sequence[str], timezone: str = "UTC", *, password_hash: str = NO_HASH
) -> list[int]:
    """Users straight into the table (one INSERT), e-mail `<name>@bench.example`; their
    ids in the order of `names`."""
    from sqlalchemy import text

    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "INSERT INTO users (name, email, role, password_hash, timezone) "
                "SELECT n, n || '@bench.example', :role, :hash, :tz "
                "FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS u(n, o) ORDER BY o RETURNING id"
            ),
            {"role": role, "hash": password_hash, "tz": timezone, "names": list(names)},
        )
        return sorted(row[0] for row in rows)


def spread_appointments(
    connection: Any,
    *,
    rows: int,
    providers: int,
    patients: int,
    positions: int,
    first: datetime,
    now: datetime,
    status: str,
    expires: str,
    created: str,
) -> None:
    """INSERT `rows` appointments of the temp tables bench_providers and bench_patients
    (columns n, id; n from 0) in one statement, under both exclusion constraints.

    Provider p's k-th row sits at position (37k + 11p) mod `positions` (32 quarter hours
    a day from `first`, 12:00-20:00 UTC: 8am-4pm in New York); with 37 prime to
    `positions` and k < positions, positions differ per provider. Its patient is
    (p + position) mod `patients`: distinct among the providers sharing a position, hence
    a time. `status`, `expires` and `created` are SQL over g.i (the row number), s.t (the
    start) and n.now (`now`)."""
    from sqlalchemy import text

    connection.execute(
        text(
            f"""
            INSERT INTO appointments
                (provider_id, patient_id, start_time, end_time, status, expires_at, created_at, updated_at)
            SELECT bp.id, bq.id, s.t, s.t + interval '15 minutes', {status}, {expires}, {created}, {created}
            FROM (SELECT CAST(:now AS timestamptz) AS now) AS n
            CROSS JOIN generate_series(0, {rows - 1}) AS g(i)
            CROSS JOIN LATERAL (SELECT mod(g.i, {providers}) AS p, g.i / {providers} AS k) AS pk
            CROSS JOIN LATERAL (SELECT mod(pk.k * 37 + pk.p * 11, {positions}) AS pos) AS ps
            CROSS JOIN LATERAL (
                SELECT CAST(:first AS timestamptz) + (ps.pos / 32) * interval '1 day'
                       + mod(ps.pos, 32) * interval '15 minutes' AS t
            ) AS s
            JOIN bench_providers AS bp ON bp.n = pk.p
            JOIN bench_patients AS bq ON bq.n = mod(pk.p + ps.pos, {patients})
            """
        ),
        {"now": now, "first": first},
    )
