"""Scale: uncached 31-day time-slots through the real providers handler with 0 and with
1,000,000 appointments in the table (`BENCH_SCALE_ROWS` sets the count, e.g. 100000 for a
quick run).

Runs in a throwaway database that is dropped at the end; the Redis keys written are deleted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from .booking_world import LIST_FIRST, NOW, ZONE, World, booking_world, listing_event, logger
from .common import (
    Table,
    Timing,
    body_of,
    call,
    count,
    fresh_function,
    insert_users,
    measure,
    ms,
    ratio,
    release_function,
    spread_appointments,
    table,
)

SCALE_ROWS = int(os.environ.get("BENCH_SCALE_ROWS") or 1_000_000)
SCALE_PROVIDERS, SCALE_PATIENTS = 1_000, 20_000
SCALE_DAYS, SCALE_PAST_DAYS = 730, 640  # bulk rows: 32 quarter hours a day, NOW - 640 d .. NOW + 90 d
SCALE_GOAL = 1.5
LISTING_RUNS = 100
log = logger("scale")


def bulk_appointments(world: World, measured: int, rows: int = SCALE_ROWS) -> tuple[float, float]:
    """`rows` (SCALE_ROWS) appointments over SCALE_PROVIDERS providers (the measured one first) and
    SCALE_PATIENTS patients over SCALE_DAYS days (`common.spread_appointments`); returns
    (insert seconds, settle seconds)."""
    positions = SCALE_DAYS * 32
    first = NOW - timedelta(days=SCALE_PAST_DAYS)
    first = first.replace(hour=12, minute=0)  # 12:00-20:00 UTC = 8am-4pm in New York, inside the hours
    started = time.perf_counter()
    bulk_providers = insert_users(
        world.admin, "provider", [f"bulk-provider-{i}" for i in range(SCALE_PROVIDERS - 1)], ZONE
    )
    bulk_patients = insert_users(world.admin, "patient", [f"bulk-patient-{i}" for i in range(SCALE_PATIENTS)])
    with world.admin.begin() as connection:
        for name, ids in (("bench_providers", [measured, *bulk_providers]), ("bench_patients", bulk_patients)):
            connection.execute(text(f"CREATE TEMP TABLE {name} (n int PRIMARY KEY, id bigint) ON COMMIT DROP"))
            numbered = "SELECT o - 1, id FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS u(id, o)"
            connection.execute(text(f"INSERT INTO {name} {numbered}"), {"ids": ids})
        # Statuses by row: 20% confirmed and 5% reserved (active, under the constraints),
        # 35% cancelled and 40% expired. Past holds kept 'reserved' are stale ones nobody
        # swept; future ones are live (they expire 20 minutes after NOW).
        spread_appointments(
            connection, rows=rows, providers=SCALE_PROVIDERS, patients=SCALE_PATIENTS, positions=positions,
            first=first, now=NOW,
            status="CASE WHEN mod(g.i, 20) < 4 THEN 'confirmed' WHEN mod(g.i, 20) = 4 THEN 'reserved' "
                   "WHEN mod(g.i, 20) < 12 THEN 'cancelled' ELSE 'expired' END",
            expires="CASE WHEN mod(g.i, 20) = 4 THEN CASE WHEN s.t > n.now THEN n.now + interval '20 minutes' "
                    "ELSE s.t - interval '3 days' + interval '30 minutes' END END",
            created="LEAST(s.t - interval '3 days', n.now)",
        )  # fmt: skip
    inserted = time.perf_counter() - started
    started = time.perf_counter()
    with world.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE) appointments"))
        connection.execute(text("CHECKPOINT"))
    return inserted, time.perf_counter() - started


@dataclass(frozen=True)
class Listing:
    state: str
    total: int
    own: int
    in_window: int
    slots: int
    timing: Timing


def measure_scale_listing(world: World, handler: Callable[..., dict[str, Any]], state: str) -> Listing:
    (provider_id,) = world.providers["list"]
    event = listing_event(world.token(world.patients["list"][0]), provider_id, LIST_FIRST, 31)
    response = call(handler, event)
    if response["headers"].get("x-cache") != "miss":
        raise RuntimeError("expected an uncached listing")
    timing = measure(lambda: call(handler, event), runs=LISTING_RUNS, warmup=5)
    window_end = datetime.combine(LIST_FIRST + timedelta(days=31), datetime.min.time(), ZoneInfo(ZONE))
    with world.admin.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM appointments")).scalar_one()
        own = connection.execute(
            text("SELECT count(*) FROM appointments WHERE provider_id = :p"), {"p": provider_id}
        ).scalar_one()
        in_window = connection.execute(
            text(
                "SELECT count(*) FROM appointments WHERE provider_id = :p AND start_time >= :a AND start_time < :b "
                "AND status IN ('reserved', 'confirmed')"
            ),
            {"p": provider_id, "a": datetime.combine(LIST_FIRST, datetime.min.time(), ZoneInfo(ZONE)), "b": window_end},
        ).scalar_one()
    return Listing(state, int(total), int(own), int(in_window), len(body_of(response)), timing)


def scale_table(listings: list[Listing], insert_seconds: float, settle_seconds: float) -> Table:
    empty = listings[0]
    rows = [
        [x.state, count(x.total), count(x.own), x.in_window, x.slots, ms(x.timing.p50_ns), ms(x.timing.p99_ns),
         ratio(x.timing.p50_ns, empty.timing.p50_ns), ratio(x.timing.p99_ns, empty.timing.p99_ns)]
        for x in listings
    ]  # fmt: skip
    factor = listings[-1].timing.p50_ns / empty.timing.p50_ns
    rows.append([f"goal: {SCALE_ROWS:,} rows within {SCALE_GOAL:g}x of empty (p50)", "", "", "", "", "", "",
                 f"{factor:.2f}x", "met" if factor <= SCALE_GOAL else "NOT MET"])  # fmt: skip
    return table(
        f"Scale: GET time-slots for 31 days ({LIST_FIRST}..{LIST_FIRST + timedelta(days=30)}), uncached",
        [
            "appointments in table",
            "total rows",
            "this provider's rows",
            "its active rows in the window",
            "slots returned",
            "p50 ms",
            "p99 ms",
            "p50 vs empty",
            "p99 vs empty",
        ],
        rows,
        f"{LISTING_RUNS} timed calls after 5 warm-ups through a providers container with REDIS_URL empty (every "
        "call reads the rules and the appointments from Postgres; X-Cache: miss checked). 'empty' is measured "
        f"before anything is booked. The {SCALE_ROWS:,} rows were inserted in one INSERT ... SELECT "
        f"generate_series ({insert_seconds:.0f} s, under both exclusion constraints and all indexes), then "
        f"VACUUM (ANALYZE) and CHECKPOINT ({settle_seconds:.0f} s): {SCALE_PROVIDERS:,} providers (the measured "
        f"one included) x {SCALE_ROWS // SCALE_PROVIDERS:,} rows over {SCALE_DAYS} days ({SCALE_PAST_DAYS} "
        f"before NOW, the rest ahead), {SCALE_PATIENTS:,} patients; 20% confirmed, 5% reserved, 35% cancelled, "
        "40% expired, no two active rows overlapping per provider or per patient."
        + (
            " The listing also returns fewer slots with the big table: the measured provider has active "
            "appointments inside the window."
            if listings[-1].slots < empty.slots
            else ""
        ),
    )


def run() -> list[Table]:
    with booking_world("scale", {"list": 1}, {"list": 1}) as world:

        def listing(state: str) -> Listing:
            uncached = fresh_function("providers", NOW, REDIS_URL="")
            try:
                return measure_scale_listing(world, uncached.handler, state)
            finally:
                release_function(uncached)

        log("31-day listing on the empty table")
        listings = [listing("empty")]
        log(f"inserting {SCALE_ROWS:,} appointments")
        insert_seconds, settle_seconds = bulk_appointments(world, world.providers["list"][0])
        log(f"inserted in {insert_seconds:.1f} s, settled in {settle_seconds:.1f} s")
        listings.append(listing(f"{SCALE_ROWS:,}"))
        return [scale_table(listings, insert_seconds, settle_seconds)]
