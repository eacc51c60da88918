"""The forgot-password request costs the same for known and unknown addresses.

POST /password-reset/request through the real auth handler, alternating a registered
address and a made-up one (interleaved, so drift on a busy machine hits both alike); the
median ratio is the security figure (goal: within 1.1x), since a difference would tell an
attacker which e-mails have accounts."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from reservations_dev.harness import http_event

from .common import (
    Timing,
    bench_environment,
    fresh_function,
    invoke,
    ms,
    quiet,
    release_function,
    table,
    throwaway_database,
)

NOW = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)
CALLS = int(os.environ.get("BENCH_CALLS", "300"))


def run() -> list[dict[str, Any]]:
    with throwaway_database("reservations_bench_reset") as url, quiet():
        auth = fresh_function("auth", NOW, **bench_environment(url, RATE_LIMIT_PER_ADDRESS="1000000/minute"))
        try:
            known = "known@example.com"
            body = {"name": "Known", "email": known, "password": "password1", "role": "patient"}
            assert invoke(auth.handler, http_event("POST", "/register", json_body=body))["statusCode"] == 201
            samples: dict[str, list[int]] = {"known": [], "unknown": []}
            events = {
                "known": http_event("POST", "/password-reset/request", json_body={"email": known}),
                "unknown": http_event("POST", "/password-reset/request", json_body={"email": "nobody@example.com"}),
            }
            for index in range(CALLS * 2 + 10):
                which = "known" if index % 2 == 0 else "unknown"
                started = time.perf_counter_ns()
                response = invoke(auth.handler, events[which])
                elapsed = time.perf_counter_ns() - started
                assert response["statusCode"] == 202, json.dumps(response)
                if index >= 10:
                    samples[which].append(elapsed)
        finally:
            release_function(auth)
    known_timing, unknown_timing = Timing(tuple(samples["known"])), Timing(tuple(samples["unknown"]))
    ratio = known_timing.p50_ns / unknown_timing.p50_ns
    rows = [
        ["registered address", ms(known_timing.p50_ns), ms(known_timing.p99_ns), f"{ratio:.2f}x"],
        ["unknown address", ms(unknown_timing.p50_ns), ms(unknown_timing.p99_ns), "1.00x (baseline)"],
    ]
    return [
        table(
            f"POST /password-reset/request, warm handler, {CALLS} calls each, interleaved",
            ["address", "p50", "p99", "p50 ratio (goal <= 1.1x)"],
            rows,
            "Both record one request row and answer 202; the token and the mail are made by the events function.",
        )
    ]
