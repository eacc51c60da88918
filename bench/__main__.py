"""Run the bench suites, print their tables as Markdown and write bench/results.json.

    python -m bench                      # every suite, in order
    python -m bench --only scheduling    # one suite (repeat --only for several)

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
    "load": "bench.load_bench",
}
ALIASES = {"scheduling_bench": "scheduling", "cache_bench": "cache", "cold-start": "cold_start", "load_bench": "load"}
NOT_BUILT_HINTS = ("not built", "sam build")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


def suite_name(value: str) -> str:
    name = ALIASES.get(value, value)
    if name not in SUITES:
        raise argparse.ArgumentTypeError(f"unknown suite {value!r}; choose from {', '.join(SUITES)}")
    return name


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
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", type=suite_name, metavar="SUITE", help=", ".join(SUITES))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    names = [name for name in SUITES if not args.only or name in args.only]

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
