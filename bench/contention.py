"""Contention: 150 patients reserve one slot at once (threads released by a barrier)
through several appointments containers; exactly one must win. A few rounds, next to the
same threads doing a bare `SELECT 1` through the same pools and calling a hello-world
handler, and to 150 uncontended reserves back to back.

Runs in a throwaway database that is dropped at the end; the Redis keys written are deleted.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .booking_world import NOW, World, booking_world, day_slots, logger, reserve_event, slot_event, slot_sequence
from .common import (
    Table,
    Timing,
    body_of,
    call,
    code_of,
    fresh_function,
    hello_handlers,
    http_event,
    invoke,
    measure_prepared,
    percentile,
    release_function,
    table,
)

CONTENDERS, CONTENTION_ROUNDS = 150, 5
CONTENTION_CONTAINERS, CONTENTION_POOL = 4, 10  # 40 connections: the server allows 100 in all
REFERENCE_RUNS = 50
log = logger("contention")


def spread(values: Sequence[float]) -> str:
    """min / median / max in milliseconds, from nanoseconds."""
    if not values:
        return "n/a"
    return f"{min(values) / 1e6:.0f} / {statistics.median(values) / 1e6:.0f} / {max(values) / 1e6:.0f}"


@dataclass(frozen=True)
class Round:
    started_ns: int
    answers: list[tuple[int, str, int, Any]]  # status, code, finished_ns, body

    @property
    def winners(self) -> int:
        return sum(1 for status, *_ in self.answers if status == 201)

    @property
    def all_answered_ns(self) -> int:
        return max(done for _, _, done, _ in self.answers) - self.started_ns

    @property
    def latencies_ns(self) -> list[int]:
        return [done - self.started_ns for _, _, done, _ in self.answers]

    def outcome(self) -> Counter[str]:
        return Counter(f"{status} {code}".strip() for status, code, _, _ in self.answers)


def together(pool: concurrent.futures.ThreadPoolExecutor, calls: Sequence[Callable[[], dict[str, Any]]]) -> Round:
    """Run the calls at once (a barrier releases every thread); time to each answer."""
    release: list[int] = []
    barrier = threading.Barrier(len(calls), action=lambda: release.append(time.perf_counter_ns()), timeout=60)

    def run(task: Callable[[], dict[str, Any]]) -> tuple[int, str, int, Any]:
        barrier.wait()
        try:
            response = task()
        except Exception as error:  # a raising handler is a 5xx at API Gateway
            return 599, f"raised {type(error).__name__}: {error}", time.perf_counter_ns(), None
        return response["statusCode"], code_of(response), time.perf_counter_ns(), body_of(response)

    futures = [pool.submit(run, task) for task in calls]
    answers = [future.result(timeout=120) for future in futures]
    return Round(release[0], answers)


def active_rows(engine: Engine, provider_id: int, start: datetime) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM appointments WHERE provider_id = :p AND start_time = :t "
                    "AND status IN ('reserved', 'confirmed')"
                ),
                {"p": provider_id, "t": start},
            ).scalar_one()
        )


@dataclass
class Contention:
    rounds: list[tuple[datetime, Round, int]]  # slot, round, active rows in Postgres after it
    select_rounds: list[Round]
    hello_rounds: list[Round]


def run_contention(world: World) -> Contention:
    (provider_id,) = world.providers["contention"]
    tokens = [world.token(patient) for patient in world.patients["contention"]]
    containers = [
        fresh_function("appointments", NOW, DB_POOL_SIZE=str(CONTENTION_POOL)) for _ in range(CONTENTION_CONTAINERS)
    ]
    _, wrapped_hello = hello_handlers()
    hello_event = http_event("GET", "/hello")
    slots = day_slots(3)
    result = Contention([], [], [])
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONTENDERS, thread_name_prefix="reserver") as pool:

            def select_one(engine: Engine) -> dict[str, Any]:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1")).scalar_one()
                return {"statusCode": 200}

            for number in range(CONTENTION_ROUNDS + 1):  # round 0 warms pools, loops and threads
                slot = slots[number]
                calls = [  # events built before the barrier: only the handler call races
                    partial(invoke, containers[i % len(containers)].handler, reserve_event(token, provider_id, slot))
                    for i, token in enumerate(tokens)
                ]
                outcome = together(pool, calls)
                rows = active_rows(world.admin, provider_id, slot)
                log(f"contention round {number}: {outcome.winners} winner(s), {rows} active row(s), "
                    f"all answered in {outcome.all_answered_ns / 1e6:.0f} ms; {dict(outcome.outcome())}")  # fmt: skip
                if number:
                    result.rounds.append((slot, outcome, rows))
                for i, (status, _, _, body) in enumerate(outcome.answers):
                    if status == 201:  # free the winner's hold (untimed), so no patient nears the limit
                        call(containers[0].handler, slot_event("cancel", tokens[i], int(body["id"])))
                engines = [c.container.engine for c in containers]
                result.select_rounds.append(
                    together(pool, [partial(select_one, engines[i % len(engines)]) for i in range(CONTENDERS)])
                )
                result.hello_rounds.append(together(pool, [lambda: invoke(wrapped_hello, hello_event)] * CONTENDERS))
    finally:
        for module in containers:
            release_function(module)
    result.select_rounds.pop(0)
    result.hello_rounds.pop(0)
    return result


def contention_table(result: Contention, single_reserve: Timing) -> Table:
    rows = []
    failures = []
    for number, (slot, outcome, active) in enumerate(result.rounds, start=1):
        counts = outcome.outcome()
        fives = sum(n for key, n in counts.items() if key.startswith("5"))
        ok = outcome.winners == 1 and active == 1 and fives == 0
        if not ok:
            failures.append(number)
        others = ", ".join(
            f"{key}: {n}" for key, n in sorted(counts.items()) if key not in ("201", "409 slot_unavailable")
        )
        rows.append([
            f"round {number} ({slot:%Y-%m-%d %H:%M}Z)", outcome.winners, active, counts.get("409 slot_unavailable", 0),
            others or "-", fives, f"{outcome.all_answered_ns / 1e6:.0f}",
            f"{percentile(outcome.latencies_ns, 50) / 1e6:.0f}", "ok" if ok else "FAIL",
        ])  # fmt: skip

    def summary(label: str, answered: str, median: str = "") -> list[str]:
        return [label, "", "", "", "", "", answered, median, ""]

    def median_answer(rounds: list[Round]) -> str:
        return f"{statistics.median(percentile(r.latencies_ns, 50) for r in rounds) / 1e6:.0f}"

    rows += [
        summary("reserve: min / median / max over rounds", spread([o.all_answered_ns for _, o, _ in result.rounds])),
        summary(f"reference: {CONTENDERS} x one uncontended reserve (p50 of {REFERENCE_RUNS}), back to back",
                f"{CONTENDERS * single_reserve.p50_ns / 1e6:.0f}"),
        summary(f"baseline: {CONTENDERS} x SELECT 1 through the same pools",
                spread([r.all_answered_ns for r in result.select_rounds]), median_answer(result.select_rounds)),
        summary(f"baseline: {CONTENDERS} x hello-world handler (no I/O)",
                spread([r.all_answered_ns for r in result.hello_rounds]), median_answer(result.hello_rounds)),
    ]  # fmt: skip
    verdict = "every round had exactly one winner" if not failures else f"FAIL in rounds {failures}"
    return table(
        f"Contention: {CONTENDERS} patients reserve the same slot at once ({verdict})",
        ["round", "winners (201)", "active rows in Postgres", "409 slot_unavailable", "other answers", "5xx",
         "all answered ms", "median answer ms", "check"],
        rows,
        f"{CONTENDERS} threads released by one barrier, each calling the real appointments handler with its own "
        f"patient's token; {CONTENTION_CONTAINERS} containers with a pool of {CONTENTION_POOL} connections each "
        f"({CONTENTION_CONTAINERS * CONTENTION_POOL} in all: this Postgres allows 100 connections, shared with "
        "everything else on the machine), so requests also queue for a connection. A warm-up round (not shown) "
        "opens the connections first. 'all answered' runs from the barrier's release to the last response; "
        "min / median / max are over the rounds. The winner's hold is cancelled after each round (untimed). "
        "Baselines: the same threads doing a bare `SELECT 1` through the same pools, and calling a hello-world "
        "handler (GIL and thread start-up only). Check: exactly one 201, exactly one active row, no 5xx.",
    )  # fmt: skip


def uncontended_reserve(world: World) -> Timing:
    """One reserve at a time through a pool-of-1 container (the Lambda setting), each on
    a slot nobody else wants, patients rotating: the reference for one round's work."""
    log("reference: uncontended reserves")
    (provider_id,) = world.providers["contention"]
    patients = world.patients["contention"]
    events = iter(
        reserve_event(world.token(patients[k % len(patients)]), provider_id, start)
        for k, start in enumerate(slot_sequence(5, REFERENCE_RUNS + 3))
    )
    module = fresh_function("appointments", NOW)
    try:
        return measure_prepared(lambda: next(events), lambda event: call(module.handler, event, 201),
                                runs=REFERENCE_RUNS)  # fmt: skip
    finally:
        release_function(module)


def run() -> list[Table]:
    with booking_world("contention", {"contention": 1}, {"contention": CONTENDERS}) as world:
        reference = uncontended_reserve(world)
        return [contention_table(run_contention(world), reference)]
