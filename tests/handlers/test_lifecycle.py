"""The appointment lifecycle through the real handlers: reschedule (idempotent, one
transaction, holds keep their deadline), cancellation reasons, the change window,
attendance, history with API Gateway's request id, notes, and the admin desk.

Who may call each endpoint at all (and the 404 for someone else's appointment) is the
security matrix's (test_security_matrix.py); here, what each call does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from reservations_dev import harness
from tests.handlers.test_cache_handlers import invoke as run_scheduled_pass
from tests.support import LambdaContext, Response, http_event
from tests.world import WEEKDAYS_8_TO_4, SyncWorld, World, add_visit_type, lasting_user, patch_profile

WED_9 = "2027-01-06T09:00:00Z"  # 45 hours after NOW (Monday 12:00 UTC)
WED_915 = "2027-01-06T09:15:00Z"
WED_10 = "2027-01-06T10:00:00Z"
WED_11 = "2027-01-06T11:00:00Z"
WEDNESDAY = {"start_date": "2027-01-06", "end_date": "2027-01-06"}


@dataclass
class Desk:
    world: World
    provider: dict[str, Any]
    patient: dict[str, Any]
    admin: dict[str, Any]

    def reserve(self, start: str, patient: dict[str, Any] | None = None, **extra: Any) -> Response:
        body = {"provider_id": self.provider["id"], "start_time": start, **extra}
        return self.world.appointments.post(
            "/appointments/reserve", json_body=body, token=(patient or self.patient)["token"]
        )

    def held(self, start: str, patient: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        response = self.reserve(start, patient, **extra)
        assert response.status == 201, response.body
        result: dict[str, Any] = response.body
        return result

    def booked(self, start: str) -> dict[str, Any]:
        """A confirmed appointment of the patient."""
        return self.world.appointment("confirm", self.patient, {"slot_id": self.held(start)["id"]})

    def move(
        self,
        actor: dict[str, Any],
        appointment_id: int,
        start: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response:
        body = {"slot_id": appointment_id, "start_time": start, **extra}
        return self.world.appointments.post(
            "/appointments/reschedule", json_body=body, token=actor["token"], headers=headers
        )

    def cancel(self, actor: dict[str, Any], appointment_id: int, **extra: Any) -> Response:
        body = {"slot_id": appointment_id, **extra}
        return self.world.appointments.post("/appointments/cancel", json_body=body, token=actor["token"])

    def attend(self, actor: dict[str, Any], appointment_id: int, status: str) -> Response:
        return self.world.appointments.post(
            f"/appointments/{appointment_id}/attendance", json_body={"status": status}, token=actor["token"]
        )

    def get(self, appointment_id: int, actor: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.world.appointments.get(
            f"/appointments/{appointment_id}", token=(actor or self.patient)["token"]
        )
        assert response.status == 200, response.body
        result: dict[str, Any] = response.body
        return result

    def listed(self, actor: dict[str, Any], **query: str) -> Response:
        return self.world.appointments.get("/appointments", token=actor["token"], query=query)

    def history(self, appointment_id: int, actor: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        response = self.world.appointments.get(
            f"/appointments/{appointment_id}/history", token=(actor or self.patient)["token"]
        )
        assert response.status == 200, response.body
        result: list[dict[str, Any]] = response.body
        return result

    def free_on_wednesday(self) -> list[str]:
        response = self.world.slots(self.provider, self.patient, WEDNESDAY)
        assert response.status == 200, response.body
        return [slot["start_time"] for slot in response.body]

    def rules(self, **rules: Any) -> None:
        patch_profile(self.world, self.provider, self.provider, rules=rules)


@pytest.fixture
def desk(world: World) -> Desk:
    provider = lasting_user(world, "provider")
    world.post_availability(provider, WEEKDAYS_8_TO_4)
    return Desk(world, provider, lasting_user(world, "patient"), world.admin())


def status_and_code(response: Response) -> tuple[int, str | None]:
    return response.status, response.body.get("code") if isinstance(response.body, dict) else None


def traced(client: Any, method: str, path: str, **kwargs: Any) -> tuple[int, Any, str]:
    """A call through a function's handler: (status, body, the event's requestContext.requestId)."""
    event = http_event(method, path, **kwargs)
    result = harness.call(client.handler, event, LambdaContext())
    return result["statusCode"], json.loads(result["body"]), event["requestContext"]["requestId"]


# --- reschedule -----------------------------------------------------------------------------


def test_a_hold_moves_to_an_overlapping_time_keeping_its_deadline_and_visit_type(desk: Desk) -> None:
    # Given a 30-minute hold at 9:00
    consult = add_visit_type(desk.world, desk.provider, "Consult", 30)
    first = desk.held(WED_9, visit_type_id=consult["id"])
    desk.world.clock.advance(minutes=5)

    # When the patient moves it 15 minutes later (overlapping itself), naming no type
    response = desk.move(desk.patient, first["id"], WED_915)

    # Then a new hold for the same people, with the old deadline and type, links back
    assert response.status == 200, response.body
    moved = response.body
    assert moved["id"] != first["id"]
    assert (moved["status"], moved["expires_at"], moved["visit_type_id"]) == (
        "reserved",
        first["expires_at"],
        consult["id"],
    )
    assert (moved["patient_id"], moved["provider_id"]) == (desk.patient["id"], desk.provider["id"])
    assert (moved["start_time"], moved["end_time"]) == (WED_915, "2027-01-06T09:45:00Z")
    assert (moved["rescheduled_from"], moved["rescheduled_to"]) == (first["id"], None)
    old = desk.get(first["id"])
    assert (old["status"], old["rescheduled_to"], old["rescheduled_from"]) == ("rescheduled", moved["id"], None)


def test_a_confirmed_appointment_moves_confirmed_and_its_old_slot_is_offered_at_once(desk: Desk) -> None:
    # Given a confirmed appointment at 9:00, the listing cached while it stood there
    booked = desk.booked(WED_9)
    longer = add_visit_type(desk.world, desk.provider, "Long", 60)
    before = desk.free_on_wednesday()
    assert WED_9 not in before and WED_11 in before

    # When its provider moves it to 11:00 as a 60-minute visit
    response = desk.move(desk.provider, booked["id"], WED_11, visit_type_id=longer["id"])

    # Then it stays confirmed, and the listings (both containers) and bookings say so at once
    assert response.status == 200, response.body
    moved = response.body
    assert (moved["status"], moved["expires_at"], moved["visit_type_id"]) == ("confirmed", None, longer["id"])
    assert moved["end_time"] == "2027-01-06T12:00:00Z"
    after = desk.free_on_wednesday()
    assert WED_9 in after
    assert not {WED_11, "2027-01-06T11:15:00Z", "2027-01-06T11:45:00Z"} & set(after)
    other_container = desk.world.slots(desk.provider, desk.patient, WEDNESDAY, via=desk.world.providers_b).body
    assert [slot["start_time"] for slot in other_container] == after
    booked_now = desk.world.providers.get(
        f"/providers/{desk.provider['id']}/booked-appointments", token=desk.provider["token"]
    )
    assert [row["id"] for row in booked_now.body] == [moved["id"]]
    listed = desk.listed(desk.patient).body
    assert {(row["id"], row["status"]) for row in listed} == {(booked["id"], "rescheduled"), (moved["id"], "confirmed")}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (WED_10, (409, "slot_unavailable")),  # another patient holds it
        ("2027-01-06T17:00:00Z", (409, "slot_unavailable")),  # outside the provider's hours
        ("2027-01-05T09:00:00Z", (400, "too_soon")),  # 21 hours ahead, under the 24 h notice
        ("2027-05-03T09:00:00Z", (400, "too_far")),  # past the 90-day horizon
        ("2027-01-06T09:10:00Z", (422, "off_grid")),
    ],
)
def test_a_move_to_a_slot_that_cannot_be_had_changes_nothing(
    desk: Desk, target: str, expected: tuple[int, str]
) -> None:
    first = desk.held(WED_9)
    desk.held(WED_10, lasting_user(desk.world, "patient"))
    before = desk.free_on_wednesday()

    assert status_and_code(desk.move(desk.patient, first["id"], target)) == expected

    assert desk.get(first["id"]) == first
    assert [row["id"] for row in desk.listed(desk.patient).body] == [first["id"]]
    assert [entry["to_status"] for entry in desk.history(first["id"])] == ["reserved"]
    assert desk.free_on_wednesday() == before


def test_the_daily_cap_and_the_hold_limit_do_not_count_the_appointment_being_moved(desk: Desk) -> None:
    # Given a cap of 2 a day, Wednesday full with the patient's two holds, and a third
    # hold on Thursday: the patient is at the 3-hold limit as well
    desk.rules(max_appointments_per_day=2)
    wednesday = desk.held(WED_9)
    desk.held(WED_10)
    thursday = desk.held("2027-01-07T09:00:00Z")
    assert status_and_code(desk.reserve("2027-01-08T09:00:00Z")) == (409, "too_many_holds")
    assert status_and_code(desk.reserve(WED_11, lasting_user(desk.world, "patient"))) == (409, "daily_limit_reached")

    # Then a Wednesday hold can still move within Wednesday, while the Thursday one
    # cannot move into the full day
    moved = desk.move(desk.patient, wednesday["id"], WED_11)
    assert moved.status == 200, moved.body
    assert moved.body["status"] == "reserved"
    assert status_and_code(desk.move(desk.patient, thursday["id"], "2027-01-06T12:00:00Z")) == (
        409,
        "daily_limit_reached",
    )


def test_only_live_holds_and_confirmed_appointments_can_move(desk: Desk) -> None:
    cancelled = desk.held(WED_9)
    desk.cancel(desk.patient, cancelled["id"])
    moved_away = desk.held(WED_10)
    assert desk.move(desk.patient, moved_away["id"], WED_11).status == 200
    lapsing = desk.held("2027-01-07T09:00:00Z")
    desk.world.clock.advance(minutes=30)  # the hold's deadline

    for appointment in (cancelled, moved_away, lapsing):
        response = desk.move(desk.patient, appointment["id"], "2027-01-08T09:00:00Z")
        assert status_and_code(response) == (409, "not_reschedulable"), appointment


def test_a_replayed_reschedule_returns_the_same_new_appointment(desk: Desk) -> None:
    first = desk.held(WED_9)
    key = {"Idempotency-Key": "move-1"}
    original = desk.move(desk.patient, first["id"], WED_10, headers=key)
    assert original.status == 200, original.body
    assert "idempotent-replayed" not in original.headers

    replay = desk.move(desk.patient, first["id"], WED_10, headers=key)

    assert (replay.status, replay.body, replay.headers["idempotent-replayed"]) == (200, original.body, "true")
    assert sorted(row["id"] for row in desk.listed(desk.patient).body) == [first["id"], original.body["id"]]
    reused = desk.move(desk.patient, first["id"], WED_11, headers=key)
    assert status_and_code(reused) == (422, "idempotency_key_reused")


# --- cancel and the change window --------------------------------------------------------------


def test_a_cancellation_keeps_its_reason_and_who_cancelled(desk: Desk) -> None:
    by_patient = desk.cancel(desk.patient, desk.held(WED_9)["id"], reason="Feeling better")
    by_provider = desk.cancel(desk.provider, desk.held(WED_10)["id"])

    assert (by_patient.body["status"], by_patient.body["cancellation_reason"], by_patient.body["cancelled_by"]) == (
        "cancelled",
        "Feeling better",
        "patient",
    )
    assert (by_provider.body["cancellation_reason"], by_provider.body["cancelled_by"]) == (None, "provider")


def test_the_change_window_binds_patients_but_not_providers_or_admins(desk: Desk) -> None:
    # Given changes are closed to patients 48 hours before the start
    desk.rules(cancellation_notice_hours=48)
    inside = desk.booked(WED_9)  # 45 hours ahead
    outside = desk.held("2027-01-08T09:00:00Z")  # 93 hours ahead

    # Then the patient can change only the later one
    assert status_and_code(desk.cancel(desk.patient, inside["id"])) == (409, "change_window_closed")
    assert status_and_code(desk.move(desk.patient, inside["id"], WED_11)) == (409, "change_window_closed")
    assert desk.move(desk.patient, outside["id"], "2027-01-08T10:00:00Z").status == 200
    assert desk.get(inside["id"])["status"] == "confirmed"

    # And the provider and the admin can change the one inside the window
    moved = desk.move(desk.provider, inside["id"], WED_10)
    assert moved.status == 200, moved.body
    cancelled = desk.cancel(desk.admin, moved.body["id"], reason="Clinic closed")
    assert (cancelled.status, cancelled.body["cancelled_by"]) == (200, "admin")

    # And cancelling it again, inside the window, answers with it unchanged
    again = desk.cancel(desk.patient, moved.body["id"], reason="me too")
    assert (again.status, again.body) == (200, cancelled.body)


def test_once_the_start_has_passed_nobody_can_cancel_or_move_it_not_even_a_live_hold(desk: Desk) -> None:
    # Given no notice: a confirmed appointment at 12:15 and, made at 12:05, a hold at 12:30
    desk.rules(min_notice_hours=0)
    booked = desk.booked("2027-01-04T12:15:00Z")
    desk.world.clock.advance(minutes=5)
    hold = desk.held("2027-01-04T12:30:00Z")  # live until 12:35

    # When both starts have passed, the hold still live
    desk.world.clock.advance(minutes=27)  # 12:32
    assert desk.get(hold["id"])["status"] == "reserved"

    # Then every party gets appointment_in_past for either change
    outcomes = {
        status_and_code(change)
        for actor in (desk.patient, desk.provider, desk.admin)
        for appointment in (booked, hold)
        for change in (
            desk.cancel(actor, appointment["id"]),
            desk.move(actor, appointment["id"], "2027-01-06T09:00:00Z"),
        )
    }
    assert outcomes == {(409, "appointment_in_past")}
    assert [desk.get(a["id"])["status"] for a in (booked, hold)] == ["confirmed", "reserved"]


# --- attendance -----------------------------------------------------------------------------


def test_attendance_is_recorded_once_the_start_has_passed_and_changeable_for_seven_days(desk: Desk) -> None:
    # Given no notice: a confirmed appointment at 12:15, a hold at 12:30 left to lapse,
    # a cancelled one at 12:45
    desk.rules(min_notice_hours=0)
    booked = desk.booked("2027-01-04T12:15:00Z")
    lapsed = desk.held("2027-01-04T12:30:00Z")
    cancelled = desk.held("2027-01-04T12:45:00Z")
    desk.cancel(desk.patient, cancelled["id"])
    assert status_and_code(desk.attend(desk.provider, booked["id"], "completed")) == (409, "attendance_not_allowed")

    # When the starts have passed
    desk.world.clock.advance(minutes=50)  # 12:50
    no_show = desk.attend(desk.provider, booked["id"], "no_show")

    # Then attendance is on record, only for the confirmed one
    assert (no_show.status, no_show.body["status"]) == (200, "no_show")
    for other in (lapsed, cancelled):
        assert status_and_code(desk.attend(desk.provider, other["id"], "completed")) == (409, "attendance_not_allowed")
    completed = desk.attend(desk.admin, booked["id"], "completed")
    assert (completed.status, completed.body["status"]) == (200, "completed")

    # And it can be changed until 7 days after the start, not later
    desk.world.clock.current = desk.world.clock.current.replace(hour=12, minute=15) + timedelta(days=7)
    assert desk.attend(desk.provider, booked["id"], "no_show").body["status"] == "no_show"
    desk.world.clock.advance(minutes=1)
    assert status_and_code(desk.attend(desk.provider, booked["id"], "completed")) == (409, "attendance_not_allowed")
    assert desk.get(booked["id"])["status"] == "no_show"
    listed = desk.listed(desk.provider, status="no_show").body
    assert [row["id"] for row in listed] == [booked["id"]]


# --- listings: every status, the admin desk ------------------------------------------------------


def test_each_status_filters_the_listing(desk: Desk) -> None:
    # Given no notice and one appointment in each status, on the patient's record
    desk.rules(min_notice_hours=0)
    expired = desk.held("2027-01-04T13:00:00Z")
    completed = desk.booked("2027-01-04T12:15:00Z")
    no_show = desk.booked("2027-01-04T12:30:00Z")
    desk.world.clock.advance(minutes=45)  # 12:45: the hold lapsed, two starts passed
    desk.attend(desk.provider, completed["id"], "completed")
    desk.attend(desk.provider, no_show["id"], "no_show")
    rescheduled = desk.held(WED_9)
    reserved = desk.move(desk.patient, rescheduled["id"], WED_10).body
    confirmed = desk.booked(WED_11)
    cancelled = desk.held("2027-01-06T12:00:00Z")
    desk.cancel(desk.patient, cancelled["id"])
    expected = {
        "reserved": reserved,
        "confirmed": confirmed,
        "cancelled": cancelled,
        "expired": expired,
        "rescheduled": rescheduled,
        "completed": completed,
        "no_show": no_show,
    }

    # Then each filter lists exactly its one
    for status, appointment in expected.items():
        response = desk.listed(desk.patient, status=status)
        assert (response.status, [row["id"] for row in response.body]) == (200, [appointment["id"]]), status
        assert response.body[0]["status"] == status


def test_admins_list_anyones_appointments_and_others_may_not_filter(desk: Desk) -> None:
    world = desk.world
    other_provider = lasting_user(world, "provider")
    world.post_availability(other_provider, WEEKDAYS_8_TO_4)
    other_patient = lasting_user(world, "patient")
    mine_here = desk.held(WED_9)
    theirs_here = desk.held(WED_11, other_patient)
    mine_there = world.appointment("reserve", desk.patient, {"provider_id": other_provider["id"], "start_time": WED_10})

    def ids(**query: str) -> set[int]:
        response = desk.listed(desk.admin, **query)
        assert response.status == 200, response.body
        return {row["id"] for row in response.body}

    assert ids(provider_id=str(desk.provider["id"])) == {mine_here["id"], theirs_here["id"]}
    assert ids(patient_id=str(desk.patient["id"])) == {mine_here["id"], mine_there["id"]}
    assert ids(provider_id=str(desk.provider["id"]), patient_id=str(desk.patient["id"])) == {mine_here["id"]}
    for actor, query in (
        (desk.patient, {"provider_id": str(desk.provider["id"])}),
        (desk.provider, {"patient_id": str(desk.patient["id"])}),
        (desk.provider, {"provider_id": str(desk.provider["id"])}),
    ):
        assert status_and_code(desk.listed(actor, **query)) == (403, "admin_required")


# --- notes and history -------------------------------------------------------------------------


def test_a_note_is_shown_to_the_patient_and_the_provider(desk: Desk) -> None:
    held = desk.held(WED_9, note="Left knee, since March")

    assert held["note"] == "Left knee, since March"
    assert desk.get(held["id"])["note"] == held["note"]
    assert desk.get(held["id"], desk.provider)["note"] == held["note"]
    assert [row["note"] for row in desk.listed(desk.provider).body] == [held["note"]]
    booked = desk.world.providers.get(
        f"/providers/{desk.provider['id']}/booked-appointments", token=desk.provider["token"]
    )
    assert [(row["id"], row["note"]) for row in booked.body] == [(held["id"], held["note"])]


def test_history_lists_each_transition_oldest_first_with_the_gateways_request_id(desk: Desk) -> None:
    world, patient, provider = desk.world, desk.patient, desk.provider
    # Given a reservation, its confirmation 5 minutes later and the provider's move 5 after
    body = {"provider_id": provider["id"], "start_time": WED_9}
    status, held, reserved_in = traced(
        world.appointments, "POST", "/appointments/reserve", json_body=body, token=patient["token"]
    )
    assert status == 201, held
    reserved_at = world.clock()
    confirmed_at = world.clock.advance(minutes=5)
    status, _, confirmed_in = traced(
        world.appointments, "POST", "/appointments/confirm", json_body={"slot_id": held["id"]}, token=patient["token"]
    )
    assert status == 200
    moved_at = world.clock.advance(minutes=5)
    status, moved, moved_in = traced(
        world.appointments,
        "POST",
        "/appointments/reschedule",
        json_body={"slot_id": held["id"], "start_time": WED_10},
        token=provider["token"],
    )
    assert status == 200, moved

    def entry(at: Any, was: str | None, now: str, actor: dict[str, Any], request_id: str) -> dict[str, Any]:
        stamp = at.isoformat().replace("+00:00", "Z")
        return {"at": stamp, "from_status": was, "to_status": now, "actor_id": actor["id"],
                "actor_role": actor["role"], "request_id": request_id}  # fmt: skip

    # Then both appointments' histories say so, to their parties and to admins
    old = [
        entry(reserved_at, None, "reserved", patient, reserved_in),
        entry(confirmed_at, "reserved", "confirmed", patient, confirmed_in),
        entry(moved_at, "confirmed", "rescheduled", provider, moved_in),
    ]
    assert desk.history(held["id"]) == old
    assert desk.history(held["id"], desk.admin) == old
    assert desk.history(moved["id"], provider) == [entry(moved_at, None, "confirmed", provider, moved_in)]
    assert len({reserved_in, confirmed_in, moved_in}) == 3


def test_a_hold_expired_by_another_reservation_is_on_record_as_the_systems(desk: Desk) -> None:
    lapsed = desk.held(WED_9)
    desk.world.clock.advance(minutes=30)
    rival = lasting_user(desk.world, "patient")
    body = {"provider_id": desk.provider["id"], "start_time": WED_9}
    status, _, request_id = traced(
        desk.world.appointments, "POST", "/appointments/reserve", json_body=body, token=rival["token"]
    )
    assert status == 201

    last = desk.history(lapsed["id"])[-1]
    assert (last["from_status"], last["to_status"], last["actor_role"], last["actor_id"], last["request_id"]) == (
        "reserved",
        "expired",
        "system",
        None,
        request_id,
    )


def test_a_hold_expired_by_the_scheduled_pass_is_on_record_as_the_systems(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week()
    (lapsed,) = sync_world.holds(provider, 1)
    sync_world.clock.advance(minutes=30)

    assert run_scheduled_pass(sync_world.function("cache_sync"))["expired_holds"] == 1

    appointments = sync_world.client("appointments")
    response = appointments.get(f"/appointments/{lapsed}/history", token=provider.token)
    assert response.status == 200, response.body
    assert [(e["from_status"], e["to_status"], e["actor_role"], e["actor_id"]) for e in response.body] == [
        (None, "reserved", "patient", response.body[0]["actor_id"]),
        ("reserved", "expired", "system", None),
    ]
    assert response.body[-1]["at"] == sync_world.clock().isoformat().replace("+00:00", "Z")


# --- bad input: a 4xx with a code --------------------------------------------------------------


def test_bad_lifecycle_input_is_refused_with_a_code(desk: Desk) -> None:
    held = desk.held(WED_9)
    too_long = desk.cancel(desk.patient, held["id"], reason="x" * 501)
    note_too_long = desk.reserve(WED_10, note="x" * 501)
    control = desk.reserve(WED_10, note="line\u0007bell")
    unknown_status = desk.listed(desk.patient, status="lost")
    bad_attendance = desk.attend(desk.provider, held["id"], "late")

    for response, field in (
        (too_long, "reason"),
        (note_too_long, "note"),
        (control, "note"),
        (unknown_status, "status"),
        (bad_attendance, "status"),
    ):
        assert response.status == 422, response.body
        assert [(error["loc"][-1], bool(error["type"])) for error in response.body["detail"]] == [(field, True)]
    assert desk.get(held["id"])["status"] == "reserved"
    assert [row["id"] for row in desk.listed(desk.patient).body] == [held["id"]]
