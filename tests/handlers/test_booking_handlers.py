"""providers and appointments functions, driven by v2.0 events into the real handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.builders import unique_email
from tests.world import World

NOW = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)  # a Monday
WEEK = {
    "general_schedule": {
        "start_date": "2027-01-04",
        "end_date": "2027-01-31",
        "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
    }
}


def post_week(world: World, provider: dict, body: dict | None = None) -> dict:
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=body or WEEK, token=provider["token"]
    )
    assert response.status == 200, response.body
    return response.body


def reserve(world: World, patient: dict, provider: dict, start: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return world.appointments.post(
        "/appointments/reserve",
        json_body={"provider_id": provider["id"], "start_time": start},
        token=patient["token"],
        **kwargs,
    )


# --- availability -------------------------------------------------------------------------


def test_original_payload_is_accepted_and_slots_listed(world: World) -> None:
    provider = world.user("provider")
    body = {
        "general_schedule": {
            "start_date": "2027-01-04",
            "end_date": "2027-01-31",
            "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
        },
        "exceptions": [
            {"date": "2027-01-15", "times": []},
            {"date": "2027-01-18", "times": [{"start": "9am", "end": "12pm"}]},
        ],
        "manual_appointment_slots": [{"date": "2027-01-09", "times": [{"start": "10:00", "end": "12:00"}]}],
        "timezone": "America/New_York",
    }
    posted = post_week(world, provider, body)
    # The 20 weekdays from Mon 4 to Fri 29 January (8am-4pm: 32 slots each), less Friday
    # the 15th (closed) and Monday the 18th (9am-12pm: 12 slots instead of 32), plus the 8
    # manual slots on Saturday the 9th (10:00-12:00); Sat 30 and Sun 31 offer nothing.
    weekdays = 20
    assert posted["slots"] == weekdays * 32 - 32 - (32 - 12) + 8 == 596
    assert posted["message"] == "availability updated for 28 date(s)"
    assert posted["conflicts"] == []
    patient = world.user("patient")
    slots = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=patient["token"],
        query={"start_date": "2027-01-08", "end_date": "2027-01-09"},
    )
    assert slots.status == 200
    starts = [s["start_time"] for s in slots.body]
    # Friday 8 Jan 8am EST = 13:00Z; Saturday 9 Jan manual 10am EST = 15:00Z.
    assert starts[0] == "2027-01-08T13:00:00Z"
    assert "2027-01-09T15:00:00Z" in starts
    assert len(starts) == 32 + 8
    assert all(s["status"] == "available" and s["provider_id"] == provider["id"] for s in slots.body)
    assert starts == sorted(starts)
    stored = world.providers.get(f"/providers/{provider['id']}/availability", token=provider["token"]).body
    assert stored["timezone"] == "America/New_York"
    assert stored["general_schedules"][0]["times"] == [{"days": "M-F", "start": "08:00", "end": "16:00"}]
    assert {e["date"] for e in stored["exceptions"]} == {"2027-01-15", "2027-01-18"}


def test_notice_period_and_default_range(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    slots = world.providers.get(f"/providers/{provider['id']}/time-slots", token=patient["token"]).body
    starts = [s["start_time"] for s in slots]
    # Now is Monday 12:00Z with 24 h notice: the first slot is Tuesday 12:00Z; default range is 7 days.
    assert starts[0] == "2027-01-05T12:00:00Z"
    assert starts[-1] == "2027-01-08T15:45:00Z"


def test_posting_replaces_only_the_touched_dates(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    post_week(world, provider, {"exceptions": [{"date": "2027-01-12", "times": [{"start": "10:00", "end": "10:30"}]}]})
    listing = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=patient["token"],
        query={"start_date": "2027-01-11", "end_date": "2027-01-13"},
    ).body
    per_day: dict[str, int] = {}
    for s in listing:
        per_day[s["start_time"][:10]] = per_day.get(s["start_time"][:10], 0) + 1
    assert per_day == {"2027-01-11": 32, "2027-01-12": 2, "2027-01-13": 32}


@pytest.mark.parametrize(
    "body",
    [
        {
            "general_schedule": {
                "start_date": "2027-01-04",
                "end_date": "2027-01-31",
                "times": [{"days": "Xx", "start": "8am", "end": "4pm"}],
            }
        },
        {
            "general_schedule": {
                "start_date": "2027-01-04",
                "end_date": "2027-01-31",
                "times": [{"days": "M", "start": "25pm", "end": "4pm"}],
            }
        },
        {
            "general_schedule": {
                "start_date": "2027-01-04",
                "end_date": "2027-01-31",
                "times": [{"days": "M", "start": "4pm", "end": "8am"}],
            }
        },
        {"general_schedule": {"start_date": "2027-02-04", "end_date": "2027-01-31", "times": []}},
        {"general_schedule": {"start_date": "2027-01-01", "end_date": "2028-01-02", "times": []}},
        {
            "general_schedule": {"start_date": "2027-01-04", "end_date": "2027-01-31", "times": []},
            "timezone": "Mars/Base",
        },
        {"exceptions": [{"date": "2027-13-01", "times": []}]},
        {},
    ],
)
def test_bad_availability_is_422(world: World, body: dict) -> None:
    provider = world.user("provider")
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=body, token=provider["token"]
    )
    assert response.status == 422, response.body


def test_availability_permissions(world: World) -> None:
    (
        provider,
        other,
        patient,
    ) = world.user("provider"), world.user("provider"), world.user("patient")
    path = f"/providers/{provider['id']}/availability"
    assert world.providers.post(path, json_body=WEEK, token=other["token"]).status == 403
    assert world.providers.post(path, json_body=WEEK, token=patient["token"]).status == 403
    assert world.providers.post(path, json_body=WEEK).status == 401
    assert world.providers.post("/providers/999999999/availability", json_body=WEEK, token=other["token"]).status == 404
    assert world.providers.get(path, token=patient["token"]).status == 403
    assert world.providers.get(path, token=other["token"]).status == 403
    assert world.providers.get(path, token=provider["token"]).status == 200


def test_availability_body_over_64k_is_413(world: World) -> None:
    provider = world.user("provider")
    huge = {"exceptions": [{"date": "2027-01-12", "times": [{"start": "10:00", "end": "10:30"}] * 3000}]}
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=huge, token=provider["token"]
    )
    assert response.status == 413


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"start_date": "2027-01-10", "end_date": "2027-01-09"}, 422),
        ({"start_date": "2027-01-03", "end_date": "2027-02-03"}, 422),
        ({"start_date": "2027-01-03", "end_date": "2027-02-02"}, 200),
        ({"start_date": "yesterday"}, 422),
        # Yesterday at the earliest, 730 days ahead at the latest (NOW is 2027-01-04).
        ({"start_date": "2027-01-02", "end_date": "2027-01-03"}, 422),
        ({"start_date": "2029-01-03", "end_date": "2029-01-03"}, 200),
        ({"start_date": "2029-01-03", "end_date": "2029-01-04"}, 422),
    ],
)
def test_time_slot_ranges(world: World, query: dict, status: int) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    response = world.providers.get(f"/providers/{provider['id']}/time-slots", token=patient["token"], query=query)
    assert response.status == status


def test_time_slots_need_sign_in_and_a_known_provider(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    assert world.providers.get(f"/providers/{provider['id']}/time-slots").status == 401
    assert world.providers.get(f"/providers/{patient['id']}/time-slots", token=patient["token"]).status == 404
    assert world.providers.get("/providers/99999999999999999999/time-slots", token=patient["token"]).status == 422


def test_list_providers_is_admin_only_and_paginated(world: World) -> None:
    admin_token = world.admin()["token"]
    patient, provider = world.user("patient"), world.user("provider")
    assert world.providers.get("/providers", token=patient["token"]).status == 403
    assert world.providers.get("/providers", token=provider["token"]).status == 403
    listed = world.providers.get("/providers", token=admin_token, query={"limit": "100"})
    assert listed.status == 200
    assert set(listed.body[0]) == {"id", "name", "email", "timezone"}
    ids = [p["id"] for p in listed.body]
    assert ids == sorted(ids)
    assert world.providers.get("/providers", token=admin_token, query={"limit": "101"}).status == 422
    assert world.providers.get("/providers", token=admin_token, query={"limit": "0"}).status == 422
    page = world.providers.get("/providers", token=admin_token, query={"limit": "1", "offset": "1"}).body
    assert len(page) <= 1


# --- reserve / confirm / cancel -----------------------------------------------------------


def test_reserve_confirm_cancel_cycle(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    reserved = reserve(world, patient, provider, "2027-01-06T09:00:00Z")
    assert reserved.status == 201, reserved.body
    body = reserved.body
    assert body["status"] == "reserved"
    assert body["slot_id"] == body["id"]
    assert body["start_time"] == "2027-01-06T09:00:00Z"
    assert body["end_time"] == "2027-01-06T09:15:00Z"
    assert body["expires_at"] == "2027-01-04T12:30:00Z"
    listed = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=patient["token"],
        query={"start_date": "2027-01-06", "end_date": "2027-01-06"},
    ).body
    assert "2027-01-06T09:00:00Z" not in [s["start_time"] for s in listed]

    confirmed = world.appointments.post(
        "/appointments/confirm", json_body={"slot_id": body["id"]}, token=patient["token"]
    )
    assert confirmed.status == 200
    assert confirmed.body["status"] == "confirmed"
    again = world.appointments.post("/appointments/confirm", json_body={"slot_id": body["id"]}, token=patient["token"])
    assert again.status == 200
    booked = world.providers.get(
        f"/providers/{provider['id']}/booked-appointments",
        token=provider["token"],
        query={"start_date": "2027-01-06", "end_date": "2027-01-06"},
    )
    assert booked.status == 200
    assert [(b["id"], b["patient_name"], b["status"]) for b in booked.body] == [
        (body["id"], patient["name"], "confirmed")
    ]
    assert world.providers.get(f"/providers/{provider['id']}/booked-appointments", token=patient["token"]).status == 403

    cancelled = world.appointments.post(
        "/appointments/cancel", json_body={"slot_id": body["id"]}, token=provider["token"]
    )
    assert cancelled.status == 200
    assert cancelled.body["status"] == "cancelled"
    assert (
        world.appointments.post(
            "/appointments/cancel", json_body={"slot_id": body["id"]}, token=patient["token"]
        ).status
        == 200
    )
    relisted = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=patient["token"],
        query={"start_date": "2027-01-06", "end_date": "2027-01-06"},
    ).body
    assert "2027-01-06T09:00:00Z" in [s["start_time"] for s in relisted]
    confirm_cancelled = world.appointments.post(
        "/appointments/confirm", json_body={"slot_id": body["id"]}, token=patient["token"]
    )
    assert confirm_cancelled.status == 409


@pytest.mark.parametrize(
    ("start", "status", "code"),
    [
        ("2027-01-05T11:45:00Z", 400, "too_soon"),
        ("2027-04-06T09:00:00Z", 400, "too_far"),
        ("2027-01-06T09:05:00Z", 422, None),
        ("2027-01-06T07:00:00Z", 409, "slot_unavailable"),
        ("2027-01-09T09:00:00Z", 409, "slot_unavailable"),
        ("not-a-time", 422, None),
    ],
)
def test_reserve_rejections(world: World, start: str, status: int, code: str | None) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    world.settings(max_booking_horizon_days=90)
    response = reserve(world, patient, provider, start)
    assert response.status == status, response.body
    if code:
        assert response.body["code"] == code


def test_naive_start_time_is_utc(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    response = reserve(world, patient, provider, "2027-01-06T10:00:00")
    assert response.status == 201
    assert response.body["start_time"] == "2027-01-06T10:00:00Z"


def test_offset_start_time_is_normalised(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    response = reserve(world, patient, provider, "2027-01-06T05:00:00-05:00")
    assert response.status == 201
    assert response.body["start_time"] == "2027-01-06T10:00:00Z"


def test_only_patients_reserve_and_unknown_provider_is_404(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    assert reserve(world, provider, provider, "2027-01-06T09:00:00Z").status == 403
    assert (
        world.appointments.post(
            "/appointments/reserve",
            json_body={"provider_id": 999999999, "start_time": "2027-01-06T09:00:00Z"},
            token=patient["token"],
        ).status
        == 404
    )
    assert (
        world.appointments.post(
            "/appointments/reserve",
            json_body={"provider_id": patient["id"], "start_time": "2027-01-06T09:00:00Z"},
            token=patient["token"],
        ).status
        == 404
    )


def test_slot_taken_and_patient_overlap_and_hold_limit(world: World) -> None:
    provider, other_provider = world.user("provider"), world.user("provider")
    first, second = world.user("patient"), world.user("patient")
    post_week(world, provider)
    post_week(world, other_provider)
    assert reserve(world, first, provider, "2027-01-06T09:00:00Z").status == 201
    taken = reserve(world, second, provider, "2027-01-06T09:00:00Z")
    assert (taken.status, taken.body["code"]) == (409, "slot_unavailable")
    overlap = reserve(world, first, other_provider, "2027-01-06T09:00:00Z")
    assert (overlap.status, overlap.body["code"]) == (409, "overlapping_appointment")
    assert reserve(world, first, provider, "2027-01-06T09:15:00Z").status == 201
    assert reserve(world, first, provider, "2027-01-06T09:30:00Z").status == 201
    limit = reserve(world, first, provider, "2027-01-06T09:45:00Z")
    assert (limit.status, limit.body["code"]) == (409, "too_many_holds")


def test_expired_hold_frees_the_slot_without_a_job(world: World) -> None:
    provider, first, second = world.user("provider"), world.user("patient"), world.user("patient")
    post_week(world, provider)
    world.settings(confirmation_grace_period_minutes=10)
    held = reserve(world, first, provider, "2027-01-06T09:00:00Z").body
    assert held["expires_at"] == "2027-01-04T12:10:00Z"
    world.clock.advance(minutes=10)
    listed = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=second["token"],
        query={"start_date": "2027-01-06", "end_date": "2027-01-06"},
    ).body
    assert "2027-01-06T09:00:00Z" in [s["start_time"] for s in listed]
    late = world.appointments.post("/appointments/confirm", json_body={"slot_id": held["id"]}, token=first["token"])
    assert (late.status, late.body["code"]) == (409, "reservation_expired")
    assert reserve(world, second, provider, "2027-01-06T09:00:00Z").status == 201
    mine = world.appointments.get(f"/appointments/{held['id']}", token=first["token"])
    assert mine.body["status"] == "expired"


def test_confirm_and_cancel_of_someone_elses_is_404(world: World) -> None:
    provider, owner, stranger = world.user("provider"), world.user("patient"), world.user("patient")
    other_provider = world.user("provider")
    post_week(world, provider)
    held = reserve(world, owner, provider, "2027-01-06T09:00:00Z").body
    assert (
        world.appointments.post(
            "/appointments/confirm", json_body={"slot_id": held["id"]}, token=stranger["token"]
        ).status
        == 404
    )
    assert (
        world.appointments.post(
            "/appointments/cancel", json_body={"slot_id": held["id"]}, token=stranger["token"]
        ).status
        == 404
    )
    assert (
        world.appointments.post(
            "/appointments/cancel", json_body={"slot_id": held["id"]}, token=other_provider["token"]
        ).status
        == 404
    )
    assert (
        world.appointments.post("/appointments/confirm", json_body={"slot_id": 987654321}, token=owner["token"]).status
        == 404
    )
    assert world.appointments.get(f"/appointments/{held['id']}", token=stranger["token"]).status == 404
    assert world.appointments.get(f"/appointments/{held['id']}", token=provider["token"]).status == 200


def test_list_own_appointments_with_filters(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    a = reserve(world, patient, provider, "2027-01-06T09:00:00Z").body
    b = reserve(world, patient, provider, "2027-01-07T09:00:00Z").body
    world.appointments.post("/appointments/confirm", json_body={"slot_id": b["id"]}, token=patient["token"])
    mine = world.appointments.get("/appointments", token=patient["token"]).body
    assert [x["id"] for x in mine] == [a["id"], b["id"]]
    confirmed = world.appointments.get("/appointments", token=patient["token"], query={"status": "confirmed"}).body
    assert [x["id"] for x in confirmed] == [b["id"]]
    day = world.appointments.get(
        "/appointments", token=patient["token"], query={"start_date": "2027-01-06", "end_date": "2027-01-06"}
    ).body
    assert [x["id"] for x in day] == [a["id"]]
    theirs = world.appointments.get("/appointments", token=provider["token"]).body
    assert [x["id"] for x in theirs] == [a["id"], b["id"]]
    assert world.appointments.get("/appointments", token=patient["token"], query={"status": "bogus"}).status == 422


def test_idempotent_reserve_replays_and_detects_reuse(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = reserve(world, patient, provider, "2027-01-06T09:00:00Z", headers=key)
    replay = reserve(world, patient, provider, "2027-01-06T09:00:00Z", headers=key)
    assert first.status == replay.status == 201
    assert first.body == replay.body
    mine = world.appointments.get("/appointments", token=patient["token"]).body
    assert len(mine) == 1
    reused = reserve(world, patient, provider, "2027-01-06T10:00:00Z", headers=key)
    assert (reused.status, reused.body["code"]) == (422, "idempotency_key_reused")
    confirm_key = {"Idempotency-Key": "confirm-" + uuid.uuid4().hex}
    c1 = world.appointments.post(
        "/appointments/confirm", json_body={"slot_id": first.body["id"]}, token=patient["token"], headers=confirm_key
    )
    c2 = world.appointments.post(
        "/appointments/confirm", json_body={"slot_id": first.body["id"]}, token=patient["token"], headers=confirm_key
    )
    assert c1.body == c2.body
    assert (
        reserve(world, patient, provider, "2027-01-06T11:00:00Z", headers={"Idempotency-Key": "x" * 256}).status == 422
    )


def test_idempotency_key_is_scoped_to_the_patient(world: World) -> None:
    provider, first, second = world.user("provider"), world.user("patient"), world.user("patient")
    post_week(world, provider)
    key = {"Idempotency-Key": "shared-key"}
    assert reserve(world, first, provider, "2027-01-06T09:00:00Z", headers=key).status == 201
    assert reserve(world, second, provider, "2027-01-06T09:15:00Z", headers=key).status == 201


def test_availability_change_reports_conflicts_and_keeps_them(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    post_week(world, provider)
    held = reserve(world, patient, provider, "2027-01-06T09:00:00Z").body
    posted = post_week(world, provider, {"exceptions": [{"date": "2027-01-06", "times": []}]})
    assert [c["id"] for c in posted["conflicts"]] == [held["id"]]
    assert world.appointments.get(f"/appointments/{held['id']}", token=patient["token"]).body["status"] == "reserved"


def test_dst_in_new_york_keeps_nine_am_local(world: World) -> None:
    world.clock.current = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    provider, patient = world.user("provider", timezone="America/New_York"), world.user("patient")
    post_week(
        world,
        provider,
        {
            "general_schedule": {
                "start_date": "2027-03-10",
                "end_date": "2027-03-16",
                "times": [{"days": "M-Su", "start": "9am", "end": "9:15am"}],
            }
        },
    )
    listing = world.providers.get(
        f"/providers/{provider['id']}/time-slots",
        token=patient["token"],
        query={"start_date": "2027-03-13", "end_date": "2027-03-15"},
    ).body
    assert [s["start_time"] for s in listing] == [
        "2027-03-13T14:00:00Z",
        "2027-03-14T13:00:00Z",
        "2027-03-15T13:00:00Z",
    ]


def test_dates_default_to_provider_local_today(world: World) -> None:
    # 03:00Z on the 6th is still the 5th in New York.
    world.clock.current = datetime(2027, 1, 6, 3, 0, tzinfo=UTC)
    world.settings(min_booking_notice_hours=0)
    provider, patient = world.user("provider", timezone="America/New_York"), world.user("patient")
    post_week(
        world,
        provider,
        {"manual_appointment_slots": [{"date": "2027-01-05", "times": [{"start": "11pm", "end": "11:15pm"}]}]},
    )
    listing = world.providers.get(f"/providers/{provider['id']}/time-slots", token=patient["token"]).body
    assert [s["start_time"] for s in listing] == ["2027-01-06T04:00:00Z"]
    assert date(2027, 1, 6) - timedelta(days=1) == date(2027, 1, 5)


@pytest.mark.parametrize(
    "query",
    [
        {"start_date": "9999-12-31"},
        {"end_date": "9999-12-31"},
        {"start_date": "0001-01-01", "end_date": "0001-01-02"},
        {"start_date": "2027-01-01", "end_date": "99999-01-01"},
    ],
)
def test_extreme_dates_are_422_not_500(world: World, query: dict) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    for path in (f"/providers/{provider['id']}/time-slots", f"/providers/{provider['id']}/booked-appointments"):
        token = patient["token"] if "time-slots" in path else provider["token"]
        assert world.providers.get(path, token=token, query=query).status == 422
    assert world.appointments.get("/appointments", token=patient["token"], query=query).status == 422


@pytest.mark.parametrize(
    "body",
    [
        {"general_schedule": {"start_date": "9999-12-01", "end_date": "9999-12-31", "times": []}},
        {"exceptions": [{"date": "9999-12-31", "times": []}]},
        {"manual_appointment_slots": [{"date": "0001-01-01", "times": [{"start": "9am", "end": "10am"}]}]},
    ],
)
def test_extreme_availability_dates_are_422(world: World, body: dict) -> None:
    provider = world.user("provider")
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=body, token=provider["token"]
    )
    assert response.status == 422


@pytest.mark.parametrize(
    "payload",
    [
        {"provider_id": 2**63, "start_time": "2027-01-06T09:00:00Z"},
        {"provider_id": -1, "start_time": "2027-01-06T09:00:00Z"},
        {"provider_id": 1, "start_time": "0001-01-01T00:00:00Z"},
        {"provider_id": 1, "start_time": "9999-12-31T23:45:00Z"},
        {"provider_id": "1; DROP TABLE users", "start_time": "2027-01-06T09:00:00Z"},
        [],
        "x",
        {"slot_id": 1},
    ],
)
def test_hostile_reserve_payloads_are_4xx(world: World, payload: object) -> None:
    patient = world.user("patient")
    response = world.appointments.post("/appointments/reserve", json_body=payload, token=patient["token"])
    assert 400 <= response.status < 500, response.body


def test_deeply_nested_json_is_rejected_cleanly(world: World) -> None:
    patient = world.user("patient")
    deep = "[" * 5000 + "]" * 5000
    response = world.appointments.post(
        "/appointments/reserve", raw_body=deep, token=patient["token"], headers={"content-type": "application/json"}
    )
    assert 400 <= response.status < 500


# --- regressions found in review -------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America", "Europe", "Etc"])
def test_a_tzdata_folder_is_not_a_time_zone(world: World, zone: str) -> None:
    body = {"name": "Dr", "email": unique_email(), "password": "password1", "role": "provider", "timezone": zone}
    assert world.auth.post("/register", json_body=body).status == 422
    provider = world.user("provider")
    posted = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body={**WEEK, "timezone": zone}, token=provider["token"]
    )
    assert posted.status == 422


@pytest.mark.parametrize("start", ["9999-12-31T23:45:00-14:00", "0001-01-01T00:00:00+14:00"])
def test_reserve_with_an_offset_past_the_calendar_is_422(world: World, start: str) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    assert reserve(world, patient, provider, start).status == 422


def test_long_runs_of_dated_entries_are_accepted(world: World) -> None:
    provider = world.user("provider")
    first = date(2027, 1, 1)
    body = {
        "general_schedule": {"start_date": "2027-01-01", "end_date": "2027-12-31", "times": []},
        "exceptions": [{"date": (first + timedelta(days=365 + i)).isoformat(), "times": []} for i in range(2)],
    }
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=body, token=provider["token"]
    )
    assert response.status == 200, response.body
    many = {"exceptions": [{"date": (first + timedelta(days=i)).isoformat(), "times": []} for i in range(367)]}
    response = world.providers.post(
        f"/providers/{provider['id']}/availability", json_body=many, token=provider["token"]
    )
    assert response.status == 200, response.body
