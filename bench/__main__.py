"""Run the bench suites, print their tables as Markdown and write bench/results.json.

    python -m bench                      # every suite, in order
    python -m bench --only scheduling    # one suite (repeat --only for several)

Suites (module in bench/):
    scheduling    slot generation, storing availability, uncached listings (scheduling_bench)
    cache         what the Redis slot cache buys on the 7-day listing (cache_bench)
    cold_start    import + first request of each built function vs a FastAPI+Mangum floor (cold_start)
    warm_latency  warm handler latency: listings, reserve / confirm / cancel, /token (warm_latency)
    contention    150 patients reserve one slot at once; exactly one wins (contention)
    throughput    reservations per second of 8 clients, threads and processes (throughput)
    scale         uncached 31-day listing, empty vs 1,000,000 appointments (scale)
    http_load     20 HTTP clients through the local gateway (http_load)
    search        availability search, next-available, the provider directory at 100,000 (search)
    reset_flow    forgot-password requests: a known vs an unknown address (reset_flow)
    stats         provider statistics with 10,000 and 1,000,000 appointments (stats)
    load          all five booking suites above, warm_latency to http_load

Knobs: BENCH_LOAD_SECONDS (http_load run, default 60), BENCH_SCALE_ROWS (scale, default
1000000), BENCH_CALLS (cache, default 300; search, 200), BENCH_RUNS (cold_start rounds, default 5),
BENCH_DATABASE_URL, BENCH_REDIS_URL.

A suite is a module with `run() -> list[dict]` (tables: title, columns, rows, notes).
Suites written elsewhere are optional: an absent module is skipped with a note, and so
is one that raises `bench.common.SuiteSkipped` or a clear "not built" error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .common import SuiteSkipped, machine_info, markdown

SUITES = {
    "scheduling": "bench.scheduling_bench",
    "cache": "bench.cache_bench",
    "cold_start": "bench.cold_start",
    "warm_latency": "bench.warm_latency",
    "contention": "bench.contention",
    "throughput": "bench.throughput",
    "scale": "bench.scale",
    "http_load": "bench.http_load",
    "search": "bench.search",
    "reset_flow": "bench.reset_flow",
    "stats": "bench.stats",
}
# Names that select several suites, and other spellings of one.
GROUPS = {"load": ("warm_latency", "contention", "throughput", "scale", "http_load")}
ALIASES = {
    "scheduling_bench": "scheduling",
    "cache_bench": "cache",
    "cold-start": "cold_start",
    "load_bench": "load",
    "warm-latency": "warm_latency",
    "http-load": "http_load",
}
NOT_BUILT_HINTS = ("not built", "sam build")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


def suite_names(value: str) -> tuple[str, ...]:
    name = ALIASES.get(value, value)
    if name in GROUPS:
        return GROUPS[name]
    if name not in SUITES:
        choices = ", ".join([*SUITES, *GROUPS])
        raise argparse.ArgumentTypeError(f"unknown suite {value!r}; choose from {choices}")
    return (name,)


def run_suite(name: str) -> dict[str, Any]:
    module_name = SUITES[name]
    result: dict[str, Any] = {"suite": name, "module": module_name, "tables": []}
    if importlib.util.find_spec(module_name) is None:
        return {**result, "status": "skipped", "note": f"{module_name} does not exist yet"}
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
        tables = module.run()
    except SuiteSkipped as reason:
        return {**result, "status": "skipped", "note": str(reason), "seconds": time.perf_counter() - started}
    except Exception as error:
        seconds = time.perf_counter() - started
        message = f"{type(error).__name__}: {error}"
        if any(hint in str(error).lower() for hint in NOT_BUILT_HINTS):
            return {**result, "status": "skipped", "note": message, "seconds": seconds}
        return {**result, "status": "error", "note": message, "traceback": traceback.format_exc(), "seconds": seconds}
    return {**result, "status": "ok", "tables": tables, "seconds": time.perf_counter() - started}


def header(machine: dict[str, Any]) -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"- CPU: {machine['cpu']} ({machine['cores']} cores, {machine['usable_cores']} usable)",
            f"- Python {machine['python']}, PostgreSQL {machine['postgres']}, Redis {machine['redis']}",
            f"- Platform: {machine['platform']}; load average at start: {machine['load_average']}",
            f"- Date: {machine['date']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\nA suite is")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", action="append", type=suite_names, metavar="SUITE", help=f"one of {', '.join([*SUITES, *GROUPS])}"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    chosen = {name for names in args.only or () for name in names}
    names = [name for name in SUITES if not args.only or name in chosen]

    machine = machine_info()
    print(header(machine), flush=True)
    results = []
    for name in names:
        result = run_suite(name)
        results.append(result)
        seconds = f" in {result['seconds']:.1f} s" if "seconds" in result else ""
        print(f"\n## {name} ({result['status']}{seconds})\n", flush=True)
        if result["status"] != "ok":
            print(f"> {result['note']}", flush=True)
            if result.get("traceback"):
                print(result["traceback"], file=sys.stderr, flush=True)
        for item in result["tables"]:
            print(markdown(item) + "\n", flush=True)

    # A partial run (--only) updates its suites and keeps the others' last figures.
    previous: list[dict[str, Any]] = []
    if args.output.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            previous = json.loads(args.output.read_text())["suites"]
    ran = {result["suite"] for result in results}
    merged = [old for old in previous if old.get("suite") not in ran] + results
    args.output.write_text(json.dumps({"machine": machine, "suites": merged}, indent=2, default=str) + "\n")
    print(f"Results written to {args.output}", flush=True)
    return 1 if any(result["status"] == "error" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
