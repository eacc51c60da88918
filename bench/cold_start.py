"""Cold start of every function, measured the way Lambda bills it.

Each sample is a fresh ``python3.12 -S -P`` process that runs the handler from the
``sam build`` artefacts - ``PYTHONPATH=<function>:<layer>/python:<runtime>``, the order
of /var/task, /opt/python and /var/runtime - with ``PYTHONDONTWRITEBYTECODE=1``, as on
Lambda's read-only file system, so nothing a run compiles is reused by the next. One
process gives two figures, both from the first line of the measured code (interpreter
start-up itself is left out, for the floor and the functions alike):

* import: ``import handler`` (the init phase's share that the code controls);
* import + first request: that, then ``handler(event, context)`` on one representative
  API Gateway v2 event until it returns - what a cold start adds to the first request.

The requests run against a real, migrated throwaway Postgres database (dropped at the
end) and the bench's Redis, with the settings of APP_ENV=aws - the code path Lambda
runs - except where nothing here could answer: JWT_SECRET_KEY instead of JWT_SECRET_ARN,
DATABASE_URL instead of DATABASE_SECRET_ARN, no EVENT_BUS_NAME (none of the requests
publishes), no X-Ray daemon (POWERTOOLS_TRACE_DISABLED). The non-API functions
(cache_sync, events, migrate) are timed on import only.

The floor is a bare FastAPI + Mangum hello-world built by the same layer recipe
(layers/shared/Makefile with only fastapi and mangum, precompiled the same way), doing
the same: import, then its first GET /hello. Goal: each API function's import + first
request within 1.5x of the floor's. A second floor adds SQLAlchemy and pg8000, its first
request connecting and running SELECT 1: the least any database-backed function pays.

Also reported: where one function's import time goes (-X importtime), and the built
layer's size against Lambda's 250 MB unzipped limit.

    .venv/bin/python -m bench --only cold_start --output /tmp/cold.json   # BENCH_RUNS=9 for more samples
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".aws-sam" / "bench"
FLOOR = "floor: FastAPI + Mangum hello-world"
# The API functions serve one request each; the others are timed on import only.
API_FUNCTIONS = ("AuthFunction", "ProvidersFunction", "AppointmentsFunction", "IntegrationsFunction", "DocsFunction")
OTHER_FUNCTIONS = ("CacheSyncFunction", "EventsFunction", "MigrateFunction")
GOAL_RATIO = 1.5
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # "250 MB": function + all layers, unzipped
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
FLOOR_HANDLER = '''"""A bare FastAPI + Mangum function: the cold-start floor."""

from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"message": "hello"}


handler = Mangum(app, lifespan="off")
'''
DATABASE_FLOOR = "floor + the database stack: SQLAlchemy Core, pg8000, one SELECT"
DATABASE_FLOOR_PACKAGES = ("fastapi", "mangum", "sqlalchemy", "pg8000")
DATABASE_FLOOR_HANDLER = '''"""The floor plus what DESIGN.md gives every function: SQLAlchemy over pg8000.

The least any database-backed function on this stack does at a cold start: import them,
connect, run one statement.
"""

import os

from fastapi import FastAPI
from mangum import Mangum
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["DATABASE_URL"], pool_size=1)
app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, int]:
    with engine.connect() as connection:
        return {"one": connection.execute(text("SELECT 1")).scalar_one()}


handler = Mangum(app, lifespan="off")
'''
# Run by every sample, floor included. What it does before `started` (reading the event,
# building the context) is not timed; `json`, `sys` and `time` are loaded by then.
DRIVER = """
import json, sys, time


class Context:
    function_name = "bench-function"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-function"
    memory_limit_in_mb = 512
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench-function"
    log_stream_name = "2026/01/01/[$LATEST]0123456789abcdef"
    identity = None
    client_context = None

    def get_remaining_time_in_millis(self):
        return 10000


event = json.loads(sys.stdin.read())
context = Context()
started = time.perf_counter()
import handler
imported = time.perf_counter()
modules = len(sys.modules)
response = handler.handler(event, context) if event else None
served = time.perf_counter()
headers = {k.lower(): v for k, v in ((response or {}).get("headers") or {}).items()}
outcome = {
    "import": imported - started,
    "served": served - started,
    "status": (response or {}).get("statusCode"),
    "x_cache": headers.get("x-cache"),
    "modules": [modules, len(sys.modules)],
    "body": str((response or {}).get("body"))[:300],
}
sys.stdout.write("\\nRESULT " + json.dumps(outcome) + "\\n")
"""
# Settings every handler validates at import, as APP_ENV=aws requires them.
FUNCTION_ENV = {
    "APP_ENV": "aws",
    "JWT_SECRET_KEY": "bench-secret-that-is-long-enough-0123456789abcdef",
    "DATABASE_TLS": "false",
    "EMAIL_SENDER": "bench@example.com",
    "POWERTOOLS_SERVICE_NAME": "reservations",
    "POWERTOOLS_METRICS_NAMESPACE": "ReservationsBench",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Lambda puts its role's credentials in the environment; nothing here calls AWS.
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_EC2_METADATA_DISABLED": "true",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
}
# For the requests: cheap argon2id (the stored hash is made with the same parameters, so a
# sign-in verifies at this cost and never rehashes). The rate limits stay APP_ENV=aws's:
# each round signs in to an account of its own (10 a minute per account).
REQUEST_ENV = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "1024"}
PASSWORD = "cold-start-password-1"  # noqa: S105 - a throwaway account
ZONE = "America/New_York"


def _architecture() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


def _python312() -> str:
    found = subprocess.run(
        ["sh", str(REPO / "scripts" / "find-python312.sh")], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def _log(message: str) -> None:
    print(f"[cold_start] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}")


def build_application(arch: str) -> Path:
    """`make build` for this machine's architecture, cached across bench runs."""
    build = WORK / f"build-{arch}"
    cache = WORK / f"cache-{arch}"
    _run(["make", "--no-print-directory", "build", f"ARCH={arch}", f"BUILD_DIR={build}", f"CACHE_DIR={cache}"])
    return build


def build_floor(
    arch: str,
    python: str,
    name: str = "floor",
    packages: tuple[str, ...] = ("fastapi", "mangum"),
    handler: str = FLOOR_HANDLER,
) -> tuple[Path, Path]:
    """A floor function and a layer of `packages` (pinned as the shared layer pins them),
    by the layer recipe; rebuilt when either changes."""
    root = WORK / f"{name}-{arch}"
    pinned = [
        line
        for line in (REPO / "layers" / "shared" / "requirements.txt").read_text().splitlines()
        if line.split("==")[0].strip().lower() in packages
    ]
    requirements = "\n".join(pinned) + "\n"
    stamp = root / "requirements.txt"
    handler_file = root / "function" / "handler.py"
    built = stamp.exists() and stamp.read_text() == requirements and (root / "layer" / "python").is_dir()
    if built and handler_file.exists() and handler_file.read_text() != handler:
        handler_file.write_text(handler)  # the layer is still good
    if not built:
        shutil.rmtree(root, ignore_errors=True)
        (root / "function").mkdir(parents=True)
        stamp.write_text(requirements)
        handler_file.write_text(handler)
        env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        _run(
            [
                "make",
                "--no-print-directory",
                "-f",
                str(REPO / "layers" / "shared" / "Makefile"),
                "build-SharedLayer",
                f"ARTIFACTS_DIR={root / 'layer'}",
                f"REQUIREMENTS={stamp}",
                "WITH_SHARED_CODE=no",
                f"LAYER_ARCHITECTURE={arch}",
            ],
            env=env,
        )
    return root / "function", root / "layer" / "python"


def runtime_dir() -> Path:
    """A stand-in for /var/runtime: boto3 & co, linked from this environment."""
    folder = WORK / "var-runtime"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is missing: run the bench with the project's venv")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


def lambda_env(function: Path, layer: Path, runtime: Path, extra: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join([str(function), str(layer), str(runtime)]),
        "LAMBDA_TASK_ROOT": str(function),
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        **FUNCTION_ENV,
        **extra,
    }


# --- one sample ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    function: Path
    layer: Path
    request: str  # as shown in the table
    events: tuple[dict[str, Any], ...] = ()  # round i sends events[i % len]; none: import only
    expect: int = 200

    def event(self, round_number: int) -> dict[str, Any] | None:
        return self.events[round_number % len(self.events)] if self.events else None


@dataclass(frozen=True)
class Sample:
    import_seconds: float
    served_seconds: float
    x_cache: str | None
    modules: tuple[int, int]


def sample(python: str, target: Target, round_number: int, runtime: Path, extra: dict[str, str]) -> Sample:
    event = target.event(round_number)
    result = subprocess.run(
        [python, "-S", "-P", "-c", DRIVER],
        input=json.dumps(event),
        cwd=target.function,
        env=lambda_env(target.function, target.layer, runtime, extra),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{target.name} did not run (exit {result.returncode}):\n{result.stderr[-3000:]}")
    outcome = json.loads(lines[-1].removeprefix("RESULT "))
    if event is not None and outcome["status"] != target.expect:
        raise RuntimeError(f"{target.name}: {target.request} answered {outcome['status']}: {outcome['body']}")
    imported, served = outcome["modules"]
    return Sample(outcome["import"], outcome["served"], outcome["x_cache"], (imported, served))


def interpreter_start_ms(python: str, runs: int) -> float:
    """What is left out of every sample: starting python3.12 -S -P itself (and exiting)."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([python, "-S", "-P", "-c", "pass"], check=True, env={"PYTHONDONTWRITEBYTECODE": "1"})
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * 1000


# --- the data the requests read --------------------------------------------------------


def _event(method: str, route: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """An API Gateway v2 event as the HTTP API sends it (routeKey is the route template)."""
    from bench.common import http_event

    event = http_event(method, path, **kwargs)
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
    return event


@contextlib.contextmanager
def request_world(
    rounds: int, log: Any = _log
) -> Iterator[tuple[dict[str, tuple[str, tuple[dict[str, Any], ...]]], dict[str, str]]]:
    """A migrated throwaway database with a patient, a provider with availability, three
    appointments, a webhook and `rounds` accounts that sign in (one per round); yields
    each API function's request (label, events) and the environment its handler needs.
    Dropped, with its Redis keys, on exit."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from bench.booking_world import weekly_availability
    from bench.common import (
        BENCH_SECRET,
        bench_environment,
        insert_users,
        issue_token,
        patched_environ,
        quiet,
        redis_url,
    )
    from bench.common import throwaway_database as scratch
    from reservations.adapters.db import Webhook
    from reservations.adapters.security import PasswordHasher
    from reservations.composition import Container
    from reservations.domain.availability import generate_slots
    from reservations.domain.scheduling import PostedAvailability

    now = datetime.now(UTC)
    today = now.date()
    redis = redis_url()
    started = time.perf_counter()
    with (
        scratch("reservations_cold") as url,
        patched_environ(**bench_environment(url, redis=redis)),
        quiet(),
    ):
        admin = create_engine(url)
        container = Container()
        provider_ids: list[int] = []
        try:
            hashed = PasswordHasher(time_cost=1, memory_kib=1024).hash(PASSWORD)
            # New names every run: the limiter's per-account windows live in Redis, not here.
            signers = [f"cold-signin-{uuid.uuid4().hex[:10]}" for _ in range(rounds)]
            insert_users(admin, "patient", signers, password_hash=hashed)
            (patient,) = insert_users(admin, "patient", ["cold-patient"])
            provider_ids = insert_users(admin, "provider", ["cold-provider"], ZONE)
            (provider,) = provider_ids
            _forget_cached_slots(redis, provider_ids)  # a reused id must not find an older run's days

            def token(user_id: int, role: str) -> str:
                return issue_token(container, user_id, role, now, ttl=timedelta(hours=2))

            days = 60
            availability = weekly_availability(today, days)
            posted = PostedAvailability(availability, frozenset(today + timedelta(days=i) for i in range(days)), None)
            patient_claims = container.accounts.verify(token(patient, "patient"))
            container.schedule.post_availability(
                container.accounts.verify(token(provider, "provider")), provider, posted
            )
            for offset in (3, 4, 5):
                day = today + timedelta(days=offset)
                first_slot, _ = list(generate_slots(availability, ZoneInfo(ZONE), day, day))[8]
                container.booking.reserve(patient_claims, provider_id=provider, start_time=first_slot)
            with container.unit_of_work() as session:
                session.add(
                    Webhook(
                        owner_id=provider,
                        url="https://hooks.example.com/reservations",
                        events=["appointment.reserved"],
                        description="cold-start bench",
                        secret="whsec_" + "0" * 32,
                        active=True,
                        created_at=now,
                    )
                )
            first = today + timedelta(days=2)
            week = {"start_date": first.isoformat(), "end_date": (first + timedelta(days=6)).isoformat()}
            listing = _event(
                "GET",
                "/providers/{provider_id}/time-slots",
                f"/providers/{provider}/time-slots",
                token=token(patient, "patient"),
                query=week,
            )
            events = {
                "AuthFunction": (
                    "POST /token (existing patient, argon2id t=1 m=1 MiB)",
                    tuple(
                        _event(
                            "POST", "/token", "/token", form={"username": f"{name}@bench.example", "password": PASSWORD}
                        )
                        for name in signers
                    ),
                ),
                "ProvidersFunction": ("GET /providers/{id}/time-slots, 7 days, bearer token", (listing,)),
                "AppointmentsFunction": (
                    "GET /appointments (3 of them), bearer token",
                    (_event("GET", "/appointments", "/appointments", token=token(patient, "patient")),),
                ),
                "IntegrationsFunction": (
                    "GET /webhooks (1 of them), bearer token",
                    (_event("GET", "/webhooks", "/webhooks", token=token(provider, "provider")),),
                ),
                "DocsFunction": ("GET /openapi.json", (_event("GET", "/openapi.json", "/openapi.json"),)),
            }
            log(f"throwaway database ready in {time.perf_counter() - started:.1f} s")
            # The tokens above are signed with the bench's secret. A BENCH_DATABASE_URL with a
            # password needs leave to (on AWS the password comes from DATABASE_SECRET_ARN).
            allow = {"ALLOW_DATABASE_URL_PASSWORD": "true"} if make_url(url).password else {}
            yield (
                events,
                {"DATABASE_URL": url, "REDIS_URL": redis, "JWT_SECRET_KEY": BENCH_SECRET, **REQUEST_ENV, **allow},
            )
        finally:
            _forget_cached_slots(redis, provider_ids)
            container.close()
            admin.dispose()


def _forget_cached_slots(url: str, provider_ids: list[int]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for provider_id in provider_ids:
            keys = list(client.scan_iter(match=f"provider:{provider_id}:timeslots:*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# --- import breakdown and sizes --------------------------------------------------------


def import_breakdown(python: str, function: Path, layer: Path, runtime: Path) -> list[tuple[str, float]]:
    """Self time per top-level package of one cold import (python -X importtime)."""
    result = subprocess.run(
        [python, "-S", "-P", "-X", "importtime", "-c", "import handler"],
        cwd=function,
        env=lambda_env(function, layer, runtime, {}),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    totals: dict[str, float] = {}
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(parts[0]) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def zipped_bytes(folder: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(folder.parent))
        return archive.stat().st_size


def _mb(size: int) -> float:
    return round(size / 1_000_000, 1)


# --- the suite -------------------------------------------------------------------------


def run() -> list[dict[str, Any]]:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    arch = _architecture()
    python = _python312()
    started = time.perf_counter()
    build = build_application(arch)
    floor_function, floor_layer = build_floor(arch, python)
    database_floor = build_floor(arch, python, "database-floor", DATABASE_FLOOR_PACKAGES, DATABASE_FLOOR_HANDLER)
    runtime = runtime_dir()
    layer = build / "SharedLayer" / "python"
    _log(f"builds ready in {time.perf_counter() - started:.0f} s")

    with request_world(runs + 1) as (events, request_env):
        hello = (_event("GET", "/hello", "/hello"),)
        targets = [Target(FLOOR, floor_function, floor_layer, "GET /hello", hello)]
        targets += [Target(DATABASE_FLOOR, *database_floor, "GET /hello (SELECT 1)", hello)]
        targets += [Target(name, build / name, layer, *events[name]) for name in API_FUNCTIONS]
        targets += [Target(name, build / name, layer, "- (import only)") for name in OTHER_FUNCTIONS]
        samples: dict[str, list[Sample]] = {target.name: [] for target in targets}
        # One discarded round warms the page cache (and fills the slot cache in Redis, as
        # other containers would have); then rounds interleave the targets, so drift on a
        # shared machine spreads over all of them alike.
        for round_number in range(runs + 1):
            for target in targets:
                measured = sample(python, target, round_number, runtime, request_env)
                if round_number:
                    samples[target.name].append(measured)
        _log(f"{runs + 1} rounds of {len(targets)} cold starts in {time.perf_counter() - started:.0f} s")
    startup_ms = interpreter_start_ms(python, runs)

    def p50_ms(name: str, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[name]) * 1000

    floor_import, floor_served = p50_ms(FLOOR, "import_seconds"), p50_ms(FLOOR, "served_seconds")
    rows = []
    for target in targets:
        imported = p50_ms(target.name, "import_seconds")
        first = samples[target.name][0]
        request = target.request
        if first.x_cache:
            request += f" (X-Cache: {'/'.join(sorted({s.x_cache or '-' for s in samples[target.name]}))})"
        modules = f"{first.modules[0]} / {first.modules[1]}" if target.events else str(first.modules[0])
        if not target.events:
            rows.append([target.name, request, round(imported), f"{imported / floor_import:.2f}x", *["-"] * 5, modules])
            continue
        served = p50_ms(target.name, "served_seconds")
        ratio = served / floor_served
        met = {FLOOR: "floor", DATABASE_FLOOR: "bound"}.get(target.name) or ("yes" if ratio <= GOAL_RATIO else "no")
        rows.append(
            [
                target.name,
                request,
                round(imported),
                f"{imported / floor_import:.2f}x",
                round(served),
                round(min(s.served_seconds for s in samples[target.name]) * 1000),
                f"{ratio:.2f}x",
                f"{GOAL_RATIO}x",
                met,
                modules,
            ]
        )
    cold_start = {
        "title": f"Cold start: import + first request from the sam build artefacts (python3.12, {arch})",
        "columns": [
            "function",
            "request",
            "import p50 ms",
            "import vs floor",
            "import + first request p50 ms",
            "min ms",
            "vs floor (import + first request)",
            "goal",
            "met?",
            "modules (import / + request)",
        ],
        "rows": rows,
        "notes": (
            f"{runs} fresh processes per row (medians, and the fastest of import + first request as a gauge of the "
            "machine's noise; one warm-up round discarded, which also fills the Redis slot cache as other containers "
            "would), each timing `import handler` and then `handler(event, context)` until "
            "it returns, from the measured code's first line: interpreter start-up is left out for the floor and the "
            f"functions alike (python3.12 -S -P starting and exiting: {startup_ms:.0f} ms here). "
            "PYTHONDONTWRITEBYTECODE=1, PYTHONPATH=function:layer:runtime as on Lambda, the layer's bytecode "
            "precompiled as shipped. Requests hit a migrated throwaway Postgres database and the bench Redis with "
            "APP_ENV=aws settings; JWT_SECRET_KEY, DATABASE_URL and no EVENT_BUS_NAME stand in for the secrets and "
            "the bus, argon2id runs at t=1, m=1 MiB (production's t=3, m=64 MiB adds its hashing time to the "
            "sign-in, whatever the imports) and tracing is off (no X-Ray daemon here; the deployed functions trace, "
            "and Powertools' Tracer then loads the X-Ray SDK and patches botocore, pg8000 and SQLAlchemy at init). "
            f"The '{DATABASE_FLOOR}' row is no function of the project but a bound: the floor plus the database "
            "stack DESIGN.md gives every function, its first request connecting and running SELECT 1 (no Redis, no "
            "token, no models); every API function but docs pays at least its ratio. "
            "The non-API functions are timed on import only. No no-bytecode variant any more: it doubled the "
            "suite's time, and the layer ships its bytecode (without it, imports took 2.2-2.9x as long)."
        ),
    }

    profiled = "AuthFunction"
    breakdown = import_breakdown(python, build / profiled, layer, runtime)
    floor_packages = dict(import_breakdown(python, floor_function, floor_layer, runtime))
    where = {
        "title": f"Where {profiled}'s import time goes (self time per top-level package, -X importtime)",
        "columns": ["package", "ms", "in the floor too"],
        "rows": [[name, round(ms, 1), "yes" if name in floor_packages else "no"] for name, ms in breakdown[:12]],
        "notes": (
            "One precompiled cold import; -X importtime adds its own overhead, so read shares, not absolutes. "
            "Self time only: what a module's body does besides importing (building the app, the routes' models) "
            "is the `handler` row."
        ),
    }

    layer_size = folder_bytes(layer)
    functions = (*API_FUNCTIONS, *OTHER_FUNCTIONS)
    largest = max(functions, key=lambda name: folder_bytes(build / name))
    function_size = folder_bytes(build / largest)
    sizes = {
        "title": "Deployment size against Lambda's limits",
        "columns": ["artefact", "unzipped MB", "zipped MB", "share of the 250 MB unzipped limit"],
        "rows": [
            ["SharedLayer", _mb(layer_size), _mb(zipped_bytes(layer)), f"{layer_size / LAMBDA_UNZIPPED_LIMIT:.0%}"],
            [f"largest function ({largest})", _mb(function_size), "-", f"{function_size / LAMBDA_UNZIPPED_LIMIT:.1%}"],
            [
                "function + layer",
                _mb(layer_size + function_size),
                "-",
                f"{(layer_size + function_size) / LAMBDA_UNZIPPED_LIMIT:.0%}",
            ],
        ],
        "notes": (
            f"{arch} build. The layer leaves out what the runtime ships (boto3, botocore, s3transfer, jmespath, "
            "dateutil, six, urllib3) and carries the precompiled bytecode (about a third of its size)."
        ),
    }
    _log(f"done in {time.perf_counter() - started:.0f} s")
    return [cold_start, where, sizes]


if __name__ == "__main__":
    from bench.common import markdown

    for table in run():
        print(markdown(table) + "\n")
