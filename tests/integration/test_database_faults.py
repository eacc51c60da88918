"""Postgres failing under the API: outages answer 503 with Retry-After, recovery needs no
restart, and no confirmed appointment is lost or duplicated. The restarted server is a
test-owned embedded Postgres, never the shared one."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reservations import migrations
from tests.builders import Clock
from tests.world import World, container_of

embedded = pytest.importorskip("reservations_dev.embedded_postgres")

DAY = (datetime.now(UTC) + timedelta(days=3)).date()
WEEKLY = {
    "general_schedule": {
        "start_date": DAY.isoformat(),
        "end_date": DAY.isoformat(),
        "times": [{"days": "M-Su", "start": "9am", "end": "11am"}],
    }
}


def live_world() -> World:
    """The functions on the real clock (the hours below are days from today), each
    container reading DATABASE_URL as it loads."""
    return World(Clock())


@pytest.fixture
def own_postgres(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    data_dir = Path(tmp_path_factory.mktemp("pg")) / "data"
    try:
        server = embedded.start_embedded_postgres(data_dir)
    except embedded.EmbeddedPostgresError as error:  # pragma: no cover - platform without pgserver
        pytest.skip(f"embedded Postgres unavailable here: {error}")
    url = server.url("faults")
    migrations.create_database_if_missing(url)
    migrations.upgrade(url)
    previous = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = url
    try:
        yield data_dir, url
    finally:
        os.environ["DATABASE_URL"] = previous
        embedded.stop_embedded_postgres(data_dir)


@pytest.mark.slow
def test_outage_answers_503_then_recovers_without_losing_bookings(own_postgres: tuple[Path, str]) -> None:
    data_dir, url = own_postgres
    api = live_world()
    try:
        provider, patient = api.user("provider"), api.user("patient")
        posted = api.providers.post(
            f"/providers/{provider['id']}/availability", json_body=WEEKLY, token=provider["token"]
        )
        assert posted.status == 200
        start = f"{DAY.isoformat()}T09:00:00Z"
        held = api.appointments.post(
            "/appointments/reserve",
            json_body={"provider_id": provider["id"], "start_time": start},
            token=patient["token"],
        )
        assert held.status == 201
        key = {"Idempotency-Key": uuid.uuid4().hex}

        # When Postgres goes away, every function answers 503 with Retry-After and a clear message.
        embedded.stop_embedded_postgres(data_dir)
        during = [
            api.appointments.post(
                "/appointments/confirm", json_body={"slot_id": held.body["id"]}, token=patient["token"], headers=key
            ),
            api.providers.get(f"/providers/{provider['id']}/time-slots", token=patient["token"]),
            api.auth.post("/token", form={"username": "x@example.com", "password": "password1"}),
            api.auth.get("/me", token=patient["token"]),
        ]
        for response in during:
            assert response.status == 503, response.body
            assert int(response.headers["retry-after"]) > 0
            assert response.body == {
                "detail": "the database is unavailable; retry shortly",
                "code": "database_unavailable",
            }

        # It comes back: the same containers recover by themselves.
        embedded.start_embedded_postgres(data_dir)
        confirmed = api.appointments.post(
            "/appointments/confirm", json_body={"slot_id": held.body["id"]}, token=patient["token"], headers=key
        )
        assert confirmed.status == 200, confirmed.body
        replay = api.appointments.post(
            "/appointments/confirm", json_body={"slot_id": held.body["id"]}, token=patient["token"], headers=key
        )
        assert replay.body == confirmed.body
    finally:
        api.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, count(*) FROM appointments WHERE patient_id = :p GROUP BY status"),
            {"p": patient["id"]},
        ).all()
    engine.dispose()
    assert rows == [("confirmed", 1)]


def cut_connection_of(api: World, database_url: str) -> None:
    """Kill the auth container's server-side connection (as a proxy or failover would)."""
    with container_of(api.auth).engine.connect() as connection:
        own_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(database_url)
    with killer.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": own_pid}).scalar_one()
    killer.dispose()


@pytest.mark.parametrize("ping_after_idle_seconds", [0.0, 0.2])
def test_a_cut_connection_that_has_idled_is_replaced_unseen(database_url: str, ping_after_idle_seconds: float) -> None:
    api = live_world()
    container_of(api.auth).configure(db_ping_after_idle_seconds=ping_after_idle_seconds)
    try:
        patient = api.user("patient")
        assert api.auth.get("/me", token=patient["token"]).status == 200
        cut_connection_of(api, database_url)
        time.sleep(ping_after_idle_seconds + 0.1)  # the connection idles past the threshold
        # The next request on the same warm container succeeds: the idle check reconnects.
        assert api.auth.get("/me", token=patient["token"]).status == 200
    finally:
        api.close()


# Cuts in a row in the test below, enough that both ways a cut surfaces are met.
CUTS = 12


def test_a_connection_cut_between_quick_requests_fails_one_request_then_reconnects(database_url: str) -> None:
    api = live_world()
    container_of(api.auth).configure(db_ping_after_idle_seconds=3600)
    try:
        patient = api.user("patient")
        assert api.auth.get("/me", token=patient["token"]).status == 200
        # A cut surfaces in one of two ways, by timing: pg8000's "network error" or a bare
        # ConnectionResetError. Repeated, both are met (each about half the time).
        for _ in range(CUTS):
            cut_connection_of(api, database_url)
            # Used a moment ago, the connection is trusted without a ping: this request meets
            # the cut and answers 503; the broken connection is dropped, so the next reconnects.
            failed = api.auth.get("/me", token=patient["token"])
            assert (failed.status, failed.body["code"]) == (503, "database_unavailable")
            assert api.auth.get("/me", token=patient["token"]).status == 200
    finally:
        api.close()
