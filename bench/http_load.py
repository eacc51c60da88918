"""HTTP load through the local API gateway (`reservations_dev.server`, template.yaml's
routes) on 127.0.0.1: 20 clients, in a separate process, list / reserve / confirm /
cancel for `BENCH_LOAD_SECONDS` (default 60), next to the same gateway serving a
hello-world function.

`python -m bench.http_load` is the helper process that runs the HTTP clients (its config
on stdin). Runs in a throwaway database that is dropped at the end; the Redis keys
written are deleted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from .booking_world import LIST_FIRST, NOW, World, booking_world, logger
from .common import REPO, Table, count, patched_environ, percentile, pin_clock, release_function, table

LOAD_CLIENTS, LOAD_PROVIDERS = 20, 10
LOAD_BASELINE_SECONDS = 10.0
GATEWAY_POOL = "10"  # DB_POOL_SIZE of `make dev`
log = logger("http_load")


def load_seconds() -> float:
    return float(os.environ.get("BENCH_LOAD_SECONDS") or 60)


HELLO_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 512
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello/
      Handler: handler.handler
      Events:
        Hello:
          Type: HttpApi
          Properties: {Path: /hello, Method: GET}
"""
HELLO_HANDLER = """\
from fastapi import FastAPI

from reservations.http.lambda_entry import make_lambda_handler

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


handler = make_lambda_handler(app)
"""


def http_clients(config: dict[str, Any]) -> dict[str, Any]:
    """Drive the gateway from a separate process (`python -m bench.http_load`, the
    config on stdin, the result as JSON on stdout), so the clients do not share the
    server's GIL. The process stops at its deadline."""
    process = subprocess.run(
        [sys.executable, "-m", "bench.http_load"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=float(config["seconds"]) + 120,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(f"the load client failed ({process.returncode}): {process.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(process.stdout)
    return result


class Recorder:
    """The load client's HTTP calls: latency, status and error code per request type,
    and the first 5xx bodies."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stats: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    async def __call__(self, op: str, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        import httpx

        entry = self.stats.setdefault(
            op, {"latencies": [], "statuses": Counter(), "codes": Counter(), "cache": Counter()}
        )
        headers = {"authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, headers=headers, **kwargs)
            status, content = response.status_code, response.content
            if cache := response.headers.get("x-cache"):
                entry["cache"][cache] += 1
        except httpx.HTTPError as error:
            status, content = 599, f"client error {type(error).__name__}: {error}".encode()
        entry["latencies"].append(time.perf_counter() - started)
        entry["statuses"][status] += 1
        try:
            body = json.loads(content)
        except ValueError:
            body = content.decode(errors="replace")
        if 400 <= status < 500 and isinstance(body, dict):
            entry["codes"][f"{status} {body.get('code', '')}"] += 1
        if status >= 500 and len(self.errors) < 10:
            self.errors.append(f"{method} {path} -> {status}: {content[:300].decode(errors='replace')}")
        return status, body

    def result(self, elapsed: float) -> dict[str, Any]:
        ops = {
            op: {**entry, **{key: dict(entry[key]) for key in ("statuses", "codes", "cache")}}
            for op, entry in self.stats.items()
        }
        return {"elapsed": elapsed, "ops": ops, "errors": self.errors}


async def hello_client(request: Recorder, config: dict[str, Any], _: int, deadline: float) -> None:
    while time.perf_counter() < deadline:
        await request("GET /hello", "GET", "/hello", None)


async def booking_client(request: Recorder, config: dict[str, Any], index: int, deadline: float) -> None:
    """One patient: list a random provider's week, reserve a listed slot, then confirm
    (60%, a third of those cancelled later) or cancel (40%); no new request after the deadline."""
    rng = random.Random(config["seed"] + index)
    token = config["tokens"][index]
    while time.perf_counter() < deadline:
        provider = rng.choice(config["providers"])
        first = date.fromisoformat(config["first_day"]) + timedelta(days=rng.randrange(config["day_span"]))
        params = {"start_date": first.isoformat(), "end_date": (first + timedelta(days=6)).isoformat()}
        status, slots = await request("list", "GET", f"/providers/{provider}/time-slots", token, params=params)
        if status != 200 or not slots or time.perf_counter() >= deadline:
            continue
        body = {"provider_id": provider, "start_time": rng.choice(slots)["start_time"]}
        status, reserved = await request("reserve", "POST", "/appointments/reserve", token, json=body)
        if status != 201 or time.perf_counter() >= deadline:
            continue
        slot = {"slot_id": reserved["slot_id"]}
        if rng.random() < 0.6:
            status, _ = await request("confirm", "POST", "/appointments/confirm", token, json=slot)
            if status != 200 or rng.random() >= 1 / 3 or time.perf_counter() >= deadline:
                continue
        await request("cancel", "POST", "/appointments/cancel", token, json=slot)


async def _drive(config: dict[str, Any]) -> dict[str, Any]:
    import httpx

    deadline = time.perf_counter() + float(config["seconds"])
    limits = httpx.Limits(max_connections=config["clients"], max_keepalive_connections=config["clients"])
    worker = hello_client if config["mode"] == "hello" else booking_client
    async with httpx.AsyncClient(base_url=config["base_url"], limits=limits, timeout=30.0) as client:
        request = Recorder(client)
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(request, config, i, deadline) for i in range(config["clients"])))
        return {**request.result(time.perf_counter() - started), "cpu": time.process_time() - cpu}


@contextmanager
def serving(template: Path) -> Iterator[tuple[str, list[ModuleType]]]:
    """The gateway over template.yaml on 127.0.0.1 (free port), its functions loaded
    before traffic (no cold start inside the timed run) with their clocks pinned."""
    from reservations.config import settings_from_environment
    from reservations_dev import harness, server

    settings_from_environment.cache_clear()  # the functions read the current environment
    harness.clear_handler_cache()
    app = server.create_app(template)
    modules: list[ModuleType] = []
    seen: set[str] = set()
    for route in app.state.routes:
        if route.function_name in seen:
            continue
        seen.add(route.function_name)
        module = harness.load_module(route)  # the warm container the gateway serves
        if hasattr(module, "container"):
            modules.append(pin_clock(module, NOW))
    try:
        with server.run_in_thread(app, "127.0.0.1", 0) as base_url:
            yield base_url, modules
    finally:
        for module in modules:
            release_function(module)
        harness.clear_handler_cache()


# Whose CPU a run counts, by the command name in /proc/<pid>/stat.
SERVERS = {"Postgres": ("postgres",), "Redis": ("redis-server",)}


def cpu_seconds_of(names: tuple[str, ...]) -> float:
    """User + system CPU of every process whose command name starts with one of `names`,
    with that of their children already gone (Postgres backends that ended)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended while we looked
        if text[text.index("(") + 1 : text.rindex(")")].startswith(names):
            fields = text[text.rindex(")") + 2 :].split()
            ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds each party spent during one run."""

    gateway: float  # this process: uvicorn, the event translation and every handler, under one GIL
    client: float
    servers: dict[str, float]

    @property
    def total(self) -> float:
        return self.gateway + self.client + sum(self.servers.values())


def drive_and_count(config: dict[str, Any]) -> tuple[dict[str, Any], CpuUse]:
    """`http_clients`, with the CPU seconds this process and each of SERVERS spent meanwhile."""
    servers_before = {name: cpu_seconds_of(names) for name, names in SERVERS.items()}
    own_before = time.process_time()
    result = http_clients(config)
    gateway = time.process_time() - own_before
    servers = {name: cpu_seconds_of(names) - servers_before[name] for name, names in SERVERS.items()}
    return result, CpuUse(gateway, float(result["cpu"]), servers)


@dataclass(frozen=True)
class LoadRun:
    name: str
    result: dict[str, Any]
    cpu: CpuUse
    cache_failures: int = 0

    def all_latencies(self) -> list[float]:
        return [x for op in self.result["ops"].values() for x in op["latencies"]]

    def statuses(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for op in self.result["ops"].values():
            total.update({int(k): v for k, v in op["statuses"].items()})
        return total


def run_gateway(world: World) -> list[LoadRun]:
    seconds = load_seconds()
    runs = []
    environment = {"DB_POOL_SIZE": GATEWAY_POOL, "POWERTOOLS_METRICS_DISABLED": "true"}  # as `make dev`
    with patched_environ(**environment), tempfile.TemporaryDirectory(prefix="bench-hello-") as folder:
        template = Path(folder) / "template.yaml"
        template.write_text(HELLO_TEMPLATE)
        (Path(folder) / "hello").mkdir()
        (Path(folder) / "hello" / "handler.py").write_text(textwrap.dedent(HELLO_HANDLER))
        baseline_seconds = min(LOAD_BASELINE_SECONDS, seconds)
        log(f"hello-world function, {LOAD_CLIENTS} clients, {baseline_seconds:g} s")
        with serving(template) as (base_url, _):
            config = {"base_url": base_url, "seconds": baseline_seconds, "clients": LOAD_CLIENTS, "mode": "hello"}
            runs.append(LoadRun("baseline: gateway + hello-world function", *drive_and_count(config)))
        log(f"template.yaml, {LOAD_CLIENTS} clients, {seconds:g} s")
        with serving(REPO / "template.yaml") as (base_url, modules):
            config = {
                "base_url": base_url,
                "seconds": seconds,
                "clients": LOAD_CLIENTS,
                "mode": "booking",
                "tokens": [world.token(p) for p in world.patients["gateway"]],
                "providers": world.providers["gateway"],
                "first_day": LIST_FIRST.isoformat(),
                "day_span": 75,
                "seed": 6,
            }
            result, cpu = drive_and_count(config)
            failures = sum(getattr(m.container.__dict__.get("day_store"), "failures", 0) for m in modules)
            runs.append(LoadRun("template.yaml: list / reserve / confirm / cancel", result, cpu, failures))
    for run in runs:
        for line in run.result["errors"][:5]:
            log(f"5xx in {run.name}: {line}")
    return runs


def by_class(statuses: Counter[int]) -> tuple[int, int, int]:
    """(2xx and 3xx, 4xx, 5xx) answer counts; the client's own failures count as 5xx (599)."""
    ok = sum(n for status, n in statuses.items() if status < 400)
    client_errors = sum(n for status, n in statuses.items() if 400 <= status < 500)
    return ok, client_errors, sum(n for status, n in statuses.items() if status >= 500)


HTTP_LOAD_GOAL = 0.5  # issue 15: the mixed journey's requests/s against the hello function's


def gateway_tables(runs: list[LoadRun]) -> list[Table]:
    baseline, load = runs
    rows = []
    for run in runs:
        latencies = run.all_latencies()
        ok, client_errors, fives = by_class(run.statuses())
        elapsed = run.result["elapsed"]
        rows.append([
            run.name, count(len(latencies)), f"{elapsed:.1f}", f"{len(latencies) / elapsed:.0f}",
            f"{percentile(latencies, 50) * 1e3:.1f}", f"{percentile(latencies, 99) * 1e3:.1f}", ok, client_errors,
            fives, "ok" if fives == 0 else "FAIL",
        ])  # fmt: skip
    share = (len(load.all_latencies()) / load.result["elapsed"]) / (
        len(baseline.all_latencies()) / baseline.result["elapsed"]
    )
    load_fives = by_class(load.statuses())[2]
    met = share >= HTTP_LOAD_GOAL and load_fives == 0
    rows.append([f"goal: the journey >= {HTTP_LOAD_GOAL:.0%} of the hello function's requests/s, no 5xx", "", "",
                 f"{share:.0%} of hello", "", "", "", "", load_fives, "met" if met else "NOT MET"])  # fmt: skip
    ops = []
    for op in ("list", "reserve", "confirm", "cancel"):
        entry = load.result["ops"].get(op)
        if not entry:
            continue
        ok, _, fives = by_class(Counter({int(k): v for k, v in entry["statuses"].items()}))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(entry["codes"].items())) or "-"
        latencies = entry["latencies"]
        cache = ", ".join(f"{k}: {v}" for k, v in sorted(entry.get("cache", {}).items())) or "-"
        ops.append([op, count(len(latencies)), f"{percentile(latencies, 50) * 1e3:.1f}",
                    f"{percentile(latencies, 99) * 1e3:.1f}", ok, codes, fives, cache])  # fmt: skip
    errors = load.result["errors"] + baseline.result["errors"]
    shown = "; ".join(f"`{e[:200]}`" for e in errors[:3])
    notes = (
        f"`create_app(template.yaml)` served by `run_in_thread` on 127.0.0.1 (uvicorn, h11), DB_POOL_SIZE="
        f"{GATEWAY_POOL} and metrics off as in `make dev`, functions loaded and clocks pinned before the run. "
        f"{LOAD_CLIENTS} asyncio clients (httpx, keep-alive) run in a separate process on the same 2 cores, each "
        "as its own patient: list 7 days of a random provider among "
        f"{LOAD_PROVIDERS} (random week in the next 11 weeks), reserve a random listed slot, then confirm (60%, "
        "a third of those cancelled afterwards) or cancel (40%). Each client stops at the deadline; requests/s "
        "counts every answered request over the run. 409s are expected (another client took the slot between "
        "listing and reserving, or the patient already has an appointment at that time). The baseline is the "
        "same gateway and client driving a hello-world FastAPI + Mangum + Powertools function. "
        f"Redis failures seen by the slot cache: {load.cache_failures}."
    )
    if errors:
        notes += f" First 5xx bodies: {shown}"
    return [
        table(
            f"HTTP load through the local gateway, {LOAD_CLIENTS} clients",
            ["run", "requests", "seconds", "requests/s", "p50 ms", "p99 ms", "2xx", "4xx", "5xx", "check"],
            rows,
            notes,
        ),
        cpu_table(runs),
        table(
            "HTTP load: the load run by request type",
            ["request", "count", "p50 ms", "p99 ms", "2xx", "4xx by code", "5xx", "X-Cache"],
            ops,
            "Latency measured by the client: HTTP on loopback, the gateway's event translation and worker-thread "
            "hop, the handler, and the wait for a pool connection when more requests than connections are in "
            "flight. X-Cache counts the listings' cache header: every reserve, confirm and cancel bumps the "
            "versions of the days around its slot (UTC date +-1), which turns those cached days into misses; "
            "the provider's other days stay hits, hence the many partial listings.",
        ),
    ]


def cpu_table(runs: list[LoadRun]) -> Table:
    """Where each run's CPU went, per answered request, and the two ceilings it implies."""
    cores = os.cpu_count() or 1
    rows, ceilings = [], []
    for run in runs:
        requests = len(run.all_latencies())
        per = {"gateway": run.cpu.gateway, "client": run.cpu.client, **run.cpu.servers, "all": run.cpu.total}
        gil_ceiling = requests / run.cpu.gateway if run.cpu.gateway else 0.0
        core_ceiling = cores * requests / run.cpu.total if run.cpu.total else 0.0
        ceilings.append((gil_ceiling, core_ceiling))
        busy = run.cpu.total / (cores * run.result["elapsed"])
        rows.append([run.name, *(f"{seconds / requests * 1e3:.2f}" for seconds in per.values()), f"{busy:.0%}",
                     f"{gil_ceiling:.0f}", f"{core_ceiling:.0f}"])  # fmt: skip
    hello = runs[0]
    hello_rate = len(hello.all_latencies()) / hello.result["elapsed"]
    load_gil, load_cores = ceilings[1]
    rows.append(["the journey's ceilings against hello's measured requests/s (the goal's baseline)", "", "", "",
                 "", "", "", f"{load_gil / hello_rate:.0%}", f"{load_cores / hello_rate:.0%}"])  # fmt: skip
    columns = ["run", "gateway process", "client process", *SERVERS, "all", "machine busy",
               "gateway ceiling req/s (one GIL)", f"{cores}-core ceiling req/s"]  # fmt: skip
    return table(
        "HTTP load: CPU per answered request (ms)",
        columns,
        rows,
        "CPU time (user + system) over each run: the gateway process's own (`time.process_time`: uvicorn, the "
        "event translation and every function's handler, in threads under one GIL), the client process's, and "
        "that of every Postgres and Redis server process on the machine (/proc, including backends that ended). "
        "The gateway ceiling is the rate at which its process's CPU alone would fill one core, which the GIL "
        f"allows at most; the {cores}-core ceiling is the rate at which all of it would fill every core. The last "
        "row sets the journey's ceilings against the requests/s the hello function reached: the share of it "
        "the journey could reach at this CPU per request, with its work under one GIL, or spread over every "
        "core without loss.",
    )


def run() -> list[Table]:
    with booking_world("http_load", {"gateway": LOAD_PROVIDERS}, {"gateway": LOAD_CLIENTS}) as world:
        return gateway_tables(run_gateway(world))


if __name__ == "__main__":  # a helper process: the HTTP clients
    print(json.dumps(asyncio.run(_drive(json.loads(sys.stdin.readline())))), flush=True)
