"""Provider statistics at scale: GET /providers/{id}/stats over 366 days through the real
providers handler, with 10,000 and with 1,000,000 appointments in the table (the same
1,000 providers and spread as the scale suite; `BENCH_SCALE_ROWS` sets the big count).
Goal: p50 with the big table within 3x of the small one."""

from __future__ import annotations

from datetime import timedelta

from reservations_dev.harness import http_event

from .booking_world import NOW, booking_world, logger
from .common import Table, Timing, call, count, fresh_function, measure, ms, ratio, release_function, table
from .scale import SCALE_ROWS, bulk_appointments

SMALL_ROWS = 10_000
STATS_GOAL = 3.0
RUNS = 50
log = logger("stats")


def measure_stats(rows: int) -> Timing:
    with booking_world(f"stats_{rows}", {"stats": 1}, {"stats": 1}) as world:
        (provider_id,) = world.providers["stats"]
        log(f"inserting {rows:,} appointments")
        bulk_appointments(world, provider_id, rows=rows)
        first = NOW.date() - timedelta(days=300)
        query = {"start_date": first.isoformat(), "end_date": (first + timedelta(days=365)).isoformat()}
        event = http_event(
            "GET", f"/providers/{provider_id}/stats", token=world.token(provider_id, "provider"), query=query
        )
        providers = fresh_function("providers", NOW, REDIS_URL="")
        try:
            return measure(lambda: call(providers.handler, event), runs=RUNS, warmup=5)
        finally:
            release_function(providers)


def run() -> list[Table]:
    small = measure_stats(SMALL_ROWS)
    big = measure_stats(SCALE_ROWS)
    factor = big.p50_ns / small.p50_ns
    rows = [
        [count(SMALL_ROWS), ms(small.p50_ns), ms(small.p99_ns), "1.00x (baseline)"],
        [count(SCALE_ROWS), ms(big.p50_ns), ms(big.p99_ns), ratio(big.p50_ns, small.p50_ns)],
        [
            f"goal: within {STATS_GOAL:g}x (p50)",
            "",
            "",
            f"{factor:.2f}x {'met' if factor <= STATS_GOAL else 'NOT MET'}",
        ],
    ]
    return [
        table(
            "Provider statistics over 366 days (GET /providers/{id}/stats), warm handler",
            ["appointments in table", "p50 ms", "p99 ms", "p50 vs 10,000"],
            rows,
            f"{RUNS} timed calls after 5 warm-ups. Counts, rates, median lead time and the weekday/hour spread are "
            "one SQL statement over the (provider_id, start_time) index; offered minutes come from the availability "
            "rules. Rows spread as in the scale suite (1,000 providers).",
        )
    ]
