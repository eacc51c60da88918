"""Provider profiles, booking rules and visit types through the real providers and
appointments handlers: what a profile shows to whom, PATCH merge semantics, rules that
apply at once (cached listings included), visit type CRUD, listings per visit type with
durations and buffers, the order of reserve's errors, and freshness across containers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.world import WEEKDAYS_8_TO_4, World, add_visit_type, patch_profile

WEDNESDAY = {"start_date": "2027-01-06", "end_date": "2027-01-06"}
DEFAULT_RULES = {
    "min_notice_hours": 24,
    "horizon_days": 90,
    "cancellation_notice_hours": 0,
    "max_appointments_per_day": None,
}


def at(clock: str, day: str = "2027-01-06") -> str:
    return f"{day}T{clock}:00Z"


def quarter_hours(first: str, last: str, day: str = "2027-01-06") -> list[str]:
    """Every quarter hour from `first` to `last` (inclusive), as the API writes them."""
    start, stop = datetime.fromisoformat(at(first, day)), datetime.fromisoformat(at(last, day))
    found = []
    while start <= stop:
        found.append(start.strftime("%Y-%m-%dT%H:%M:%SZ"))
        start += timedelta(minutes=15)
    return found


def listed(
    world: World, provider: dict, patient: dict, query: dict = WEDNESDAY, *, via: Any = None, **extra: Any
) -> list:
    response = world.slots(provider, patient, {**query, **{k: str(v) for k, v in extra.items()}}, via=via)
    assert response.status == 200, response.body
    return response.body


def starts(slots: list) -> list[str]:
    return [slot["start_time"] for slot in slots]


def reserve(world: World, patient: dict, provider: dict, start: str, visit_type: dict | None = None) -> Any:
    body: dict[str, Any] = {"provider_id": provider["id"], "start_time": start}
    if visit_type is not None:
        body["visit_type_id"] = visit_type["id"]
    return world.appointments.post("/appointments/reserve", json_body=body, token=patient["token"])


def failure(response: Any) -> tuple[int, str | None]:
    return response.status, response.body.get("code") if isinstance(response.body, dict) else None


def default_type(world: World, provider: dict) -> dict:
    types = world.providers.get(f"/providers/{provider['id']}/visit-types", token=provider["token"]).body
    return types[0]


def cast(world: World) -> tuple[dict, dict, dict, dict]:
    """A provider, another provider, a patient and an admin."""
    return world.user("provider"), world.user("provider"), world.user("patient"), world.admin()


@pytest.fixture
def open_provider(world: World) -> dict:
    provider = world.user("provider")
    world.post_availability(provider, WEEKDAYS_8_TO_4)
    return provider


# --- the profile ------------------------------------------------------------------------------


def test_the_profile_shows_the_email_only_to_the_provider_itself_and_admins(world: World) -> None:
    provider, other, patient, admin = cast(world)
    seen = {}
    for name, viewer in {"self": provider, "admin": admin, "patient": patient, "other": other}.items():
        response = world.providers.get(f"/providers/{provider['id']}", token=viewer["token"])
        assert response.status == 200, response.body
        seen[name] = response.body
    assert seen["self"]["email"] == seen["admin"]["email"] == provider["email"]
    assert "email" not in seen["patient"] and "email" not in seen["other"]
    assert seen["patient"] == {key: value for key, value in seen["self"].items() if key != "email"}
    assert seen["patient"] == {
        "id": provider["id"],
        "name": provider["name"],
        "timezone": "UTC",
        "specialty": None,
        "bio": None,
        "visit_types": [
            {
                "id": seen["patient"]["visit_types"][0]["id"],
                "provider_id": provider["id"],
                "name": "Standard visit",
                "duration_minutes": 15,
                "buffer_before_minutes": 0,
                "buffer_after_minutes": 0,
                "description": None,
                "active": True,
            }
        ],
        "rules": DEFAULT_RULES,
    }
    for not_a_provider in (patient, admin):
        response = world.providers.get(f"/providers/{not_a_provider['id']}", token=provider["token"])
        assert failure(response) == (404, "provider_not_found")


def test_patch_merges_named_fields_and_null_restores_defaults(world: World) -> None:
    provider, admin = world.user("provider"), world.admin()
    profile = patch_profile(
        world,
        provider,
        provider,
        specialty="Dermatology",
        bio="Skin.\nHair.",
        rules={"min_notice_hours": 2, "max_appointments_per_day": 5, "cancellation_notice_hours": 12},
    )
    assert (profile["specialty"], profile["bio"]) == ("Dermatology", "Skin.\nHair.")
    assert profile["rules"] == {
        **DEFAULT_RULES,
        "min_notice_hours": 2,
        "max_appointments_per_day": 5,
        "cancellation_notice_hours": 12,
    }
    # Fields left out stay, named ones replace (an admin may change them too).
    profile = patch_profile(world, admin, provider, name="Dr Renamed", rules={"horizon_days": 10})
    assert (profile["name"], profile["specialty"], profile["bio"]) == ("Dr Renamed", "Dermatology", "Skin.\nHair.")
    assert profile["rules"] == {
        "min_notice_hours": 2,
        "horizon_days": 10,
        "cancellation_notice_hours": 12,
        "max_appointments_per_day": 5,
    }
    assert profile["email"] == provider["email"]  # an admin sees it
    # Null restores a rule's default and clears the cap, the specialty and the bio.
    profile = patch_profile(
        world,
        provider,
        provider,
        specialty=None,
        bio=None,
        rules={"min_notice_hours": None, "max_appointments_per_day": None, "cancellation_notice_hours": None},
    )
    assert (profile["specialty"], profile["bio"]) == (None, None)
    assert profile["rules"] == {**DEFAULT_RULES, "horizon_days": 10}
    stored = world.providers.get(f"/providers/{provider['id']}", token=provider["token"]).body
    assert stored == profile


def test_only_the_provider_or_an_admin_may_patch(world: World) -> None:
    provider, other, patient = world.user("provider"), world.user("provider"), world.user("patient")
    for stranger in (other, patient):
        response = world.providers.patch(
            f"/providers/{provider['id']}", json_body={"specialty": "X"}, token=stranger["token"]
        )
        assert response.status == 403, response.body
    assert world.providers.get(f"/providers/{provider['id']}", token=provider["token"]).body["specialty"] is None


# --- rules apply at once ----------------------------------------------------------------------------


def test_rules_apply_at_once_to_a_cached_listing_in_every_container(world: World, open_provider: dict) -> None:
    provider, patient = open_provider, world.user("patient")
    week = {"start_date": "2027-01-04", "end_date": "2027-01-10"}
    containers = (world.providers, world.providers_b)

    def both() -> list[list[str]]:
        return [starts(listed(world, provider, patient, week, via=client)) for client in containers]

    for client in containers:  # warm the cache of both containers
        listed(world, provider, patient, week, via=client)
        assert world.slots(provider, patient, week, via=client).headers["x-cache"] == "hit"
    before = both()
    assert [day[0] for day in before] == [at("12:00", "2027-01-05")] * 2  # 24 h notice

    # No notice: Monday's afternoon opens (now is Monday 12:00).
    patch_profile(world, provider, provider, rules={"min_notice_hours": 0})
    assert [day[0] for day in both()] == [at("12:00", "2027-01-04")] * 2
    # A 2-day horizon: nothing after Wednesday 12:00.
    patch_profile(world, provider, provider, rules={"horizon_days": 2})
    assert [day[-1] for day in both()] == [at("12:00", "2027-01-06")] * 2
    # A cap of one, reached on Tuesday: Tuesday offers nothing.
    world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": at("09:00", "2027-01-05")})
    patch_profile(world, provider, provider, rules={"max_appointments_per_day": 1})
    for day in both():
        assert not [start for start in day if start.startswith("2027-01-05")]
        assert day[0] == at("12:00", "2027-01-04") and day[-1] == at("12:00", "2027-01-06")
    # Defaults back: exactly the first listing again (the booked slot was too soon for it).
    patch_profile(
        world,
        provider,
        provider,
        rules={"min_notice_hours": None, "horizon_days": None, "max_appointments_per_day": None},
    )
    assert both() == before


def test_rules_apply_at_once_to_reservations(world: World, open_provider: dict) -> None:
    provider, patient = open_provider, world.user("patient")
    patch_profile(world, provider, provider, rules={"min_notice_hours": 48})
    assert failure(reserve(world, patient, provider, at("13:00", "2027-01-05"))) == (400, "too_soon")
    patch_profile(world, provider, provider, rules={"min_notice_hours": 0, "horizon_days": 3})
    assert reserve(world, patient, provider, at("13:00", "2027-01-04")).status == 201  # an hour ahead
    assert failure(reserve(world, patient, provider, at("13:00", "2027-01-08"))) == (400, "too_far")
    patch_profile(world, provider, provider, rules={"max_appointments_per_day": 1})
    assert failure(reserve(world, patient, provider, at("14:00", "2027-01-04"))) == (409, "daily_limit_reached")
    patch_profile(world, provider, provider, rules={"max_appointments_per_day": None})
    assert reserve(world, patient, provider, at("14:00", "2027-01-04")).status == 201


# --- visit types ------------------------------------------------------------------------------------


def test_visit_type_crud_and_its_errors(world: World) -> None:
    provider, other, patient, admin = cast(world)
    base = f"/providers/{provider['id']}/visit-types"
    body = {
        "name": "Consultation",
        "duration_minutes": 45,
        "buffer_before_minutes": 5,
        "buffer_after_minutes": 10,
        "description": "A first talk.",
    }
    created = world.providers.post(base, json_body=body, token=provider["token"])
    assert created.status == 201, created.body
    consult = created.body
    assert consult == {**body, "id": consult["id"], "provider_id": provider["id"], "active": True}
    # Names are unique among active types, in any case.
    duplicate = world.providers.post(base, json_body={**body, "name": "CONSULTATION"}, token=provider["token"])
    assert failure(duplicate) == (409, "visit_type_exists")
    # Only the provider or an admin manages them.
    for stranger in (other, patient):
        denied = world.providers.post(base, json_body={**body, "name": "Other"}, token=stranger["token"])
        assert denied.status == 403, denied.body
        denied = world.providers.patch(
            f"/visit-types/{consult['id']}", json_body={"name": "X"}, token=stranger["token"]
        )
        assert denied.status == 403, denied.body
        assert world.providers.delete(f"/visit-types/{consult['id']}", token=stranger["token"]).status == 403
    by_admin = world.providers.post(base, json_body={"name": "Follow-up", "duration_minutes": 30}, token=admin["token"])
    assert by_admin.status == 201, by_admin.body
    assert (by_admin.body["buffer_before_minutes"], by_admin.body["buffer_after_minutes"]) == (0, 0)
    listed_types = world.providers.get(base, token=patient["token"]).body
    assert [t["name"] for t in listed_types] == ["Standard visit", "Consultation", "Follow-up"]
    standard = listed_types[0]

    renamed = world.providers.patch(
        f"/visit-types/{consult['id']}",
        json_body={"name": "Long consultation", "duration_minutes": 60},
        token=provider["token"],
    )
    assert renamed.status == 200, renamed.body
    assert renamed.body == {**consult, "name": "Long consultation", "duration_minutes": 60}
    clash = world.providers.patch(
        f"/visit-types/{consult['id']}", json_body={"name": "follow-UP"}, token=provider["token"]
    )
    assert failure(clash) == (409, "visit_type_exists")

    # The default type keeps its shape (its name may change) and cannot be deleted.
    for shape in ({"duration_minutes": 30}, {"buffer_before_minutes": 5}, {"buffer_after_minutes": 5}):
        fixed = world.providers.patch(f"/visit-types/{standard['id']}", json_body=shape, token=provider["token"])
        assert failure(fixed) == (409, "default_visit_type_fixed")
    named = world.providers.patch(
        f"/visit-types/{standard['id']}", json_body={"name": "Quick"}, token=provider["token"]
    )
    assert named.status == 200 and named.body["duration_minutes"] == 15
    assert failure(world.providers.delete(f"/visit-types/{standard['id']}", token=provider["token"])) == (
        409,
        "default_visit_type",
    )

    # Deleting deactivates: no longer listed, its name free again, gone for later changes.
    deleted = world.providers.delete(f"/visit-types/{consult['id']}", token=provider["token"])
    assert (deleted.status, deleted.body) == (204, "")
    assert [t["name"] for t in world.providers.get(base, token=patient["token"]).body] == ["Quick", "Follow-up"]
    again = world.providers.post(base, json_body={**body, "name": "Long Consultation"}, token=provider["token"])
    assert again.status == 201 and again.body["id"] != consult["id"]
    gone = world.providers.patch(f"/visit-types/{consult['id']}", json_body={"name": "Y"}, token=provider["token"])
    assert failure(gone) == (404, "visit_type_not_found")
    assert failure(world.providers.delete(f"/visit-types/{consult['id']}", token=provider["token"])) == (
        404,
        "visit_type_not_found",
    )
    assert failure(world.providers.get(f"/providers/{patient['id']}/visit-types", token=patient["token"])) == (
        404,
        "provider_not_found",
    )


def test_a_deleted_or_changed_type_leaves_existing_appointments_as_booked(world: World, open_provider: dict) -> None:
    provider, patient, other = open_provider, world.user("patient"), world.user("patient")
    visit = add_visit_type(world, provider, "Therapy", 30, buffer_after_minutes=15)
    booked = world.appointment(
        "reserve", patient, {"provider_id": provider["id"], "start_time": at("10:00"), "visit_type_id": visit["id"]}
    )
    assert (booked["visit_type_id"], booked["end_time"]) == (visit["id"], at("10:30"))
    # Changes apply to future bookings only.
    changed = world.providers.patch(
        f"/visit-types/{visit['id']}",
        json_body={"duration_minutes": 60, "buffer_after_minutes": 0},
        token=provider["token"],
    )
    assert changed.status == 200, changed.body
    later = world.appointment(
        "reserve", other, {"provider_id": provider["id"], "start_time": at("13:00"), "visit_type_id": visit["id"]}
    )
    assert later["end_time"] == at("14:00")
    # Deleted: not bookable, not listable; the appointment keeps it and its buffer.
    assert world.providers.delete(f"/visit-types/{visit['id']}", token=provider["token"]).status == 204
    kept = world.appointments.get(f"/appointments/{booked['id']}", token=patient["token"]).body
    assert (kept["visit_type_id"], kept["start_time"], kept["end_time"]) == (visit["id"], at("10:00"), at("10:30"))
    assert failure(reserve(world, other, provider, at("11:00"), visit)) == (404, "visit_type_not_found")
    response = world.slots(provider, patient, {**WEDNESDAY, "visit_type_id": str(visit["id"])})
    assert failure(response) == (404, "visit_type_not_found")
    default_starts = starts(listed(world, provider, patient))
    assert at("10:30") not in default_starts  # the 15-minute buffer after 10:30 is still kept
    assert at("10:45") in default_starts and at("09:45") in default_starts


# --- listings per visit type ------------------------------------------------------------------


def test_listings_per_type_have_its_duration_and_keep_its_buffers_free(world: World, open_provider: dict) -> None:
    provider, patient = open_provider, world.user("patient")
    hour = add_visit_type(world, provider, "Hour", 60)
    buffered = add_visit_type(world, provider, "Buffered", 30, buffer_before_minutes=15, buffer_after_minutes=15)

    slots = listed(world, provider, patient, visit_type_id=hour["id"])
    assert starts(slots) == quarter_hours("08:00", "15:00")
    for slot in slots:
        assert slot["visit_type_id"] == hour["id"] and slot["provider_id"] == provider["id"]
        assert slot["status"] == "available"
        length = datetime.fromisoformat(slot["end_time"]) - datetime.fromisoformat(slot["start_time"])
        assert length == timedelta(minutes=60)
    # Buffers may lie outside the availability: 8:00 (7:45 kept free) and 15:30 (until 16:15).
    assert starts(listed(world, provider, patient, visit_type_id=buffered["id"])) == quarter_hours("08:00", "15:30")

    # A plain 15-minute booking at 12:00 keeps buffered visits from 11:30 to 12:15 away.
    world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": at("12:00")})
    assert starts(listed(world, provider, patient, visit_type_id=buffered["id"])) == (
        quarter_hours("08:00", "11:15") + quarter_hours("12:30", "15:30")
    )
    assert starts(listed(world, provider, patient, visit_type_id=hour["id"])) == (
        quarter_hours("08:00", "11:00") + quarter_hours("12:15", "15:00")
    )
    # A buffered booking at 9:00 keeps 8:45-9:45 free for every type.
    other = world.user("patient")
    world.appointment(
        "reserve", other, {"provider_id": provider["id"], "start_time": at("09:00"), "visit_type_id": buffered["id"]}
    )
    assert starts(listed(world, provider, patient)) == (
        quarter_hours("08:00", "08:30") + quarter_hours("09:45", "11:45") + quarter_hours("12:15", "15:45")
    )
    assert starts(listed(world, provider, patient, visit_type_id=hour["id"])) == (
        quarter_hours("09:45", "11:00") + quarter_hours("12:15", "15:00")
    )


def test_a_client_naming_no_visit_type_sees_fifteen_minute_slots_as_before(world: World, open_provider: dict) -> None:
    provider, patient = open_provider, world.user("patient")
    add_visit_type(world, provider, "Long", 120, buffer_before_minutes=30, buffer_after_minutes=30)
    response = world.slots(provider, patient)  # 2027-01-06 .. 2027-01-12, no visit_type_id
    assert response.status == 200
    standard = default_type(world, provider)
    assert len(response.body) == 5 * 32
    for slot in response.body:
        assert set(slot) == {"provider_id", "visit_type_id", "start_time", "end_time", "status"}
        assert slot["visit_type_id"] == standard["id"]
        length = datetime.fromisoformat(slot["end_time"]) - datetime.fromisoformat(slot["start_time"])
        assert length == timedelta(minutes=15)
    booked = world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": at("09:00")})
    assert (booked["visit_type_id"], booked["end_time"]) == (standard["id"], at("09:15"))
    assert starts(listed(world, provider, patient)) == [s for s in quarter_hours("08:00", "15:45") if s != at("09:00")]


# --- reserve ------------------------------------------------------------------------------------------


def test_reserve_errors_come_in_the_documented_order(world: World, open_provider: dict) -> None:
    provider, patient, rival = open_provider, world.user("patient"), world.user("patient")
    foreign = add_visit_type(world, world.user("provider"), "Elsewhere", 15)
    retired = add_visit_type(world, provider, "Retired", 15)
    assert world.providers.delete(f"/visit-types/{retired['id']}", token=provider["token"]).status == 204
    buffered = add_visit_type(world, provider, "Buffered", 15, buffer_after_minutes=15)
    patch_profile(world, provider, provider, rules={"horizon_days": 2, "max_appointments_per_day": 1})
    world.appointment("reserve", rival, {"provider_id": provider["id"], "start_time": at("09:00")})  # Wednesday full

    # Invalid input first; then the visit type, even for a time that is too soon.
    off_grid = reserve(world, patient, provider, at("09:10", "2027-01-05"), foreign)
    assert off_grid.status == 422
    for unknown in (foreign, retired, {"id": 2**62}):
        assert failure(reserve(world, patient, provider, at("09:00", "2027-01-04"), unknown)) == (
            404,
            "visit_type_not_found",
        )
    # The rules before the cap: Tuesday 11:00 is too soon, Wednesday 13:00 too far
    # (though Wednesday is full).
    assert failure(reserve(world, patient, provider, at("11:00", "2027-01-05"))) == (400, "too_soon")
    assert failure(reserve(world, patient, provider, at("13:00"))) == (400, "too_far")
    # The cap before the slot: a taken slot, or one outside the hours, on the full day.
    assert failure(reserve(world, patient, provider, at("09:00"))) == (409, "daily_limit_reached")
    assert failure(reserve(world, patient, provider, at("07:00"))) == (409, "daily_limit_reached")
    # Under the cap: outside the availability, or a buffer colliding, is slot_unavailable.
    assert failure(reserve(world, patient, provider, at("16:00", "2027-01-05"))) == (409, "slot_unavailable")
    patch_profile(world, provider, provider, rules={"max_appointments_per_day": None})
    assert failure(reserve(world, patient, provider, at("08:45"), buffered)) == (409, "slot_unavailable")
    assert reserve(world, patient, provider, at("08:30"), buffered).status == 201  # kept free until 9:00


def test_every_appointment_response_names_its_visit_type(world: World, open_provider: dict) -> None:
    provider, patient = open_provider, world.user("patient")
    visit = add_visit_type(world, provider, "Checkup", 30)
    standard = default_type(world, provider)
    typed = world.appointment(
        "reserve", patient, {"provider_id": provider["id"], "start_time": at("10:00"), "visit_type_id": visit["id"]}
    )
    plain = world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": at("11:00")})
    assert (typed["visit_type_id"], plain["visit_type_id"]) == (visit["id"], standard["id"])
    assert world.appointment("confirm", patient, {"slot_id": typed["id"]})["visit_type_id"] == visit["id"]
    assert world.appointment("cancel", patient, {"slot_id": plain["id"]})["visit_type_id"] == standard["id"]
    assert (
        world.appointments.get(f"/appointments/{typed['id']}", token=patient["token"]).body["visit_type_id"]
        == (visit["id"])
    )
    mine = world.appointments.get("/appointments", token=patient["token"]).body
    assert {(a["id"], a["visit_type_id"]) for a in mine} == {(typed["id"], visit["id"]), (plain["id"], standard["id"])}
    booked = world.providers.get(
        f"/providers/{provider['id']}/booked-appointments", token=provider["token"], query=WEDNESDAY
    ).body
    assert [(a["id"], a["visit_type_id"]) for a in booked] == [(typed["id"], visit["id"])]


# --- the cache ------------------------------------------------------------------------------------------


def test_after_a_type_change_or_a_booking_every_types_listing_is_fresh_in_the_other_container(
    world: World, open_provider: dict
) -> None:
    provider, patient = open_provider, world.user("patient")
    hour = add_visit_type(world, provider, "Hour", 60)
    standard = default_type(world, provider)
    types = {"standard": standard["id"], "hour": hour["id"]}

    def warm() -> None:
        for client in (world.providers, world.providers_b):
            for type_id in types.values():
                listed(world, provider, patient, via=client, visit_type_id=type_id)
        for type_id in types.values():  # one cached value per day serves every type
            hit = world.slots(provider, patient, {**WEDNESDAY, "visit_type_id": str(type_id)}, via=world.providers_b)
            assert hit.headers["x-cache"] == "hit"

    def on_b(type_id: int) -> list[str]:
        return starts(listed(world, provider, patient, via=world.providers_b, visit_type_id=type_id))

    warm()
    # A visit type change through container A is seen by B at once.
    changed = world.providers.patch(
        f"/visit-types/{hour['id']}",
        json_body={"duration_minutes": 90, "buffer_before_minutes": 30},
        token=provider["token"],
    )
    assert changed.status == 200, changed.body
    assert on_b(hour["id"]) == quarter_hours("08:00", "14:30")
    ninety = listed(world, provider, patient, via=world.providers_b, visit_type_id=hour["id"])
    assert ninety[0]["end_time"] == at("09:30")
    # A new type is listable from B at once.
    short = add_visit_type(world, provider, "Short", 30, buffer_after_minutes=30)
    types["short"] = short["id"]
    assert on_b(short["id"]) == quarter_hours("08:00", "15:30")

    warm()
    # A booking through the appointments function: every type's listing in B is fresh.
    world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": at("12:00")})
    assert on_b(standard["id"]) == [s for s in quarter_hours("08:00", "15:45") if s != at("12:00")]
    # 90 minutes with 30 before: a start s is free when [s-30, s+90) misses 12:00-12:15.
    assert on_b(hour["id"]) == quarter_hours("08:00", "10:30") + quarter_hours("12:45", "14:30")
    assert on_b(short["id"]) == quarter_hours("08:00", "11:00") + quarter_hours("12:15", "15:30")

    warm()
    # A cancellation too: everything is offered again.
    booked = world.appointments.get("/appointments", token=patient["token"]).body[0]
    world.appointment("cancel", patient, {"slot_id": booked["id"]})
    assert on_b(standard["id"]) == quarter_hours("08:00", "15:45")
    assert on_b(hour["id"]) == quarter_hours("08:00", "14:30")
    assert on_b(short["id"]) == quarter_hours("08:00", "15:30")
