"""The whole API over real HTTP through the local gateway, as `make dev` serves it:
template routes -> v2.0 events -> the real Lambda handlers -> Postgres and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from reservations_dev.harness import clear_handler_cache
from reservations_dev.server import create_app, run_in_thread
from tests.builders import http_login, http_register, unique_email
from tests.support import REPO


@pytest.fixture(scope="module")
def api(database_url: str) -> Iterator[httpx.Client]:
    clear_handler_cache()  # handlers read DATABASE_URL when first imported
    with (
        run_in_thread(create_app(REPO / "template.yaml")) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        yield client
    clear_handler_cache()


def signed_in(api: httpx.Client, role: str, **extra: str) -> dict:
    created = http_register(api, role, **extra)
    token = http_login(api, created)["access_token"]
    return {**created, "headers": {"Authorization": f"Bearer {token}"}}


def test_original_client_registers_logs_in_and_uses_the_token(api: httpx.Client) -> None:
    email = unique_email()
    assert (
        api.post(
            "/register", json={"name": "Ann", "email": email, "password": "password1", "role": "patient"}
        ).status_code
        == 201
    )
    form = api.post("/token", data={"username": email, "password": "password1"})
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("application/json")
    token = form.json()
    assert token["token_type"] == "bearer"
    me = api.get("/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200
    assert me.json()["email"] == email


def test_auth_errors_over_http(api: httpx.Client) -> None:
    missing = api.get("/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"detail": "not authenticated", "code": "not_authenticated"}
    bad_form = api.post("/token", data={"username": unique_email(), "password": "nope-nope"})
    assert bad_form.status_code == 401
    invalid_utf8 = api.post("/register", content=b"\xff\xfe not json", headers={"content-type": "application/json"})
    assert invalid_utf8.status_code == 400
    assert invalid_utf8.json()["code"] == "bad_request"


def test_unknown_route_is_the_gateways_404(api: httpx.Client) -> None:
    response = api.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_booking_flow_over_http(api: httpx.Client) -> None:
    provider = signed_in(api, "provider", timezone="UTC")
    patient = signed_in(api, "patient")
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    posted = api.post(
        f"/providers/{provider['id']}/availability",
        json={
            "general_schedule": {
                "start_date": day.isoformat(),
                "end_date": day.isoformat(),
                "times": [{"days": "M-Su", "start": "9am", "end": "10am"}],
            }
        },
        headers=provider["headers"],
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["slots"] == 4

    query = {"start_date": day.isoformat(), "end_date": day.isoformat()}
    first = api.get(f"/providers/{provider['id']}/time-slots", params=query, headers=patient["headers"])
    assert first.status_code == 200
    assert [s["start_time"][11:16] for s in first.json()] == ["09:00", "09:15", "09:30", "09:45"]
    second = api.get(f"/providers/{provider['id']}/time-slots", params=query, headers=patient["headers"])
    assert second.headers["x-cache"] == "hit"

    start = first.json()[1]["start_time"]
    reserved = api.post(
        "/appointments/reserve",
        json={"provider_id": provider["id"], "start_time": start},
        headers={**patient["headers"], "Idempotency-Key": uuid.uuid4().hex},
    )
    assert reserved.status_code == 201, reserved.text
    slot_id = reserved.json()["slot_id"]
    after = api.get(f"/providers/{provider['id']}/time-slots", params=query, headers=patient["headers"])
    assert start not in [s["start_time"] for s in after.json()]

    assert (
        api.post("/appointments/confirm", json={"slot_id": slot_id}, headers=patient["headers"]).json()["status"]
        == "confirmed"
    )
    booked = api.get(f"/providers/{provider['id']}/booked-appointments", params=query, headers=provider["headers"])
    assert [b["slot_id"] for b in booked.json()] == [slot_id]
    assert (
        api.post("/appointments/cancel", json={"slot_id": slot_id}, headers=patient["headers"]).json()["status"]
        == "cancelled"
    )
    again = api.get(f"/providers/{provider['id']}/time-slots", params=query, headers=patient["headers"])
    assert start in [s["start_time"] for s in again.json()]
