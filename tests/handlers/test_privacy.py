"""Data export and account erasure through the real handlers: what an export holds (and
does not), who may export or erase whom, and that nothing personal of an erased user is
left in any column of any table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from reservations.config import Settings
from reservations.domain.privacy import ERASED_NAME
from tests.builders import PASSWORD, create_admin, empty_tables, http_login, http_register, private_database
from tests.support import FunctionClient, load_function
from tests.world import WEEKDAYS_8_TO_4, World, container_of, follow, named_provider

WED_9 = "2027-01-06T09:00:00Z"
WED_10 = "2027-01-06T10:00:00Z"
FRI_9 = "2027-01-08T09:00:00Z"
SCANNED_TYPES = ("text", "character varying", "jsonb", "bytea")


def person(world: World, role: str, name: str) -> dict[str, Any]:
    created = http_register(world.auth, role, name=name)
    return {**created, "token": http_login(world.auth, created)["access_token"]}


def book(world: World, provider: dict[str, Any], patient: dict[str, Any], start: str, **extra: Any) -> int:
    held = world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": start, **extra})
    world.appointment("confirm", patient, {"slot_id": held["id"]})
    return int(held["id"])


def export_of(world: World, actor: dict[str, Any], user_id: int | None = None) -> Any:
    path = "/me/export" if user_id is None else f"/users/{user_id}/export"
    return world.auth.get(path, token=actor["token"])


def hits(world: World, needles: list[str]) -> list[str]:
    """Every table.column (text, varchar, jsonb, bytea) holding any of ``needles``."""
    found = []
    with container_of(world.auth).engine.connect() as connection:
        columns = connection.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = ANY(CAST(:types AS text[]))"
            ),
            {"types": list(SCANNED_TYPES)},
        ).all()
        assert {"users", "outbox_events", "outgoing_mail", "audit_log"} <= {c.table_name for c in columns}
        for table, column, data_type in columns:
            value = f"encode(\"{column}\", 'escape')" if data_type == "bytea" else f'"{column}"::text'
            for needle in needles:
                count = connection.execute(
                    text(f'SELECT count(*) FROM "{table}" WHERE strpos(lower({value}), lower(:needle)) > 0'),
                    {"needle": needle},
                ).scalar_one()
                if count:
                    found.append(f"{table}.{column}")
    return found


@pytest.fixture
def clinic(world: World) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A provider open on weekdays and two patients, each with a booking."""
    provider = named_provider(world, f"Dr Ada-{uuid.uuid4().hex[:8]}")
    world.post_availability(provider, WEEKDAYS_8_TO_4)
    patient = person(world, "patient", f"Zelda-{uuid.uuid4().hex[:10]}")
    other = person(world, "patient", f"Otto-{uuid.uuid4().hex[:10]}")
    book(world, provider, patient, WED_9, note="knee")
    book(world, provider, other, WED_10, note="back")
    return provider, patient, other


# --- export ---------------------------------------------------------------------------------


def test_a_patient_exports_their_appointments_and_nothing_of_other_users(world: World, clinic: Any) -> None:
    provider, patient, other = clinic
    response = export_of(world, patient)
    assert response.status == 200, response.body
    document = response.body
    assert document["profile"]["email"] == patient["email"]
    assert document["profile"]["name"] == patient["name"]
    [appointment] = document["appointments"]
    assert appointment["start_time"].startswith("2027-01-06T09:00")
    assert appointment["role"] == "patient"
    assert [h["to_status"] for h in appointment["history"]] == ["reserved", "confirmed"]
    assert document["notification_settings"]["notify_email"] is True
    assert any(entry["action"] == "login.succeeded" for entry in document["audit_entries"])
    raw = json.dumps(document).lower()
    for foreign in (other["name"], other["email"], provider["name"], provider["email"], "back"):
        assert foreign.lower() not in raw


def test_a_provider_exports_bookings_as_provider_without_patients_names(world: World, clinic: Any) -> None:
    provider, patient, other = clinic
    response = export_of(world, provider)
    assert response.status == 200, response.body
    document = response.body
    assert {a["role"] for a in document["appointments"]} == {"provider"}
    assert {a["patient_id"] for a in document["appointments"]} == {patient["id"], other["id"]}
    assert document["availability"]["periods"], "the provider's weekly hours"
    assert document["visit_types"], "at least the default visit type"
    raw = json.dumps(document).lower()
    for foreign in (patient["name"], patient["email"], other["name"], other["email"]):
        assert foreign.lower() not in raw


def test_a_providers_export_holds_dated_hours_and_webhooks_without_secrets(world: World, clinic: Any) -> None:
    provider, _, _ = clinic
    dated = {
        "exceptions": [{"date": "2027-01-07", "times": []}],
        "manual_appointment_slots": [{"date": "2027-01-09", "times": [{"start": "9am", "end": "11am"}]}],
    }
    world.post_availability(provider, {**WEEKDAYS_8_TO_4, **dated})
    integrations = FunctionClient(load_function("integrations"))
    try:
        follow(container_of(integrations), container_of(world.auth), webhook_allow_private=True)
        hook = integrations.post(
            "/webhooks", json_body={"url": "http://127.0.0.1:9/hook", "events": ["*"]}, token=provider["token"]
        )
        assert hook.status == 201, hook.body
    finally:
        integrations.close()
    response = export_of(world, provider)
    assert response.status == 200, response.body
    document = response.body
    assert [(d["day"], d["kind"], d["windows"]) for d in document["availability"]["days"]] == [
        ("2027-01-07", "exception", []),
        ("2027-01-09", "manual", [{"start": "09:00", "end": "11:00"}]),
    ]
    [period] = document["availability"]["periods"]
    assert period["windows"] == [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "16:00"}]
    [webhook] = document["webhooks"]
    assert (webhook["id"], webhook["url"]) == (hook.body["id"], "http://127.0.0.1:9/hook")
    assert hook.body["secret"] not in json.dumps(document)


def test_admins_export_anyone_and_others_get_404(world: World, clinic: Any) -> None:
    provider, patient, other = clinic
    admin = world.admin()
    response = export_of(world, admin, patient["id"])
    assert response.status == 200, response.body
    assert response.body["profile"]["email"] == patient["email"]
    for stranger in (other, provider):
        refused = export_of(world, stranger, patient["id"])
        assert refused.status == 404, refused.body
        assert refused.body["code"] == "user_not_found"
    assert export_of(world, admin, 999_999_999).status == 404
    # The export is in the audit trail, about the exported user.
    trail = world.auth.get("/audit", token=admin["token"], query={"action": "user.export"}).body["items"]
    assert any(e["target_id"] == patient["id"] and e["actor_id"] == admin["id"] for e in trail)


# --- erasure --------------------------------------------------------------------------------


def test_erasure_leaves_nothing_personal_and_the_address_can_register_again(world: World, clinic: Any) -> None:
    provider, patient, _ = clinic
    name, address = patient["name"], patient["email"]
    # Personal data spread around: a note naming them, a cancellation reason, a failed
    # sign-in, a forgotten-password request, a future booking and a past one.
    future = book(world, provider, patient, FRI_9, note=f"ask for {name}")
    gone = world.appointment(
        "reserve", patient, {"provider_id": provider["id"], "start_time": WED_10.replace("10", "11")}
    )
    cancelled = world.appointments.post(
        "/appointments/cancel", json_body={"slot_id": gone["id"], "reason": f"mail {address}"}, token=patient["token"]
    )
    assert cancelled.status == 200, cancelled.body
    assert world.auth.post("/token", form={"username": address, "password": "wrong-one"}).status == 401
    assert world.auth.post("/password-reset/request", json_body={"email": address}).status == 202
    assert hits(world, [name, address]), "the scan must see the data before erasure"

    world.clock.advance(days=2)  # Wednesday 09:00 is now past; Friday's is ahead
    patient["token"] = http_login(world.auth, patient)["access_token"]
    provider["token"] = http_login(world.auth, provider)["access_token"]
    response = world.auth.delete("/me", json_body={"password": PASSWORD}, token=patient["token"])
    assert response.status == 204, response.body

    assert hits(world, [name, address]) == []
    # The erased account is gone: its token, its password.
    assert world.auth.get("/me", token=patient["token"]).status == 401
    login = world.auth.post("/token", form={"username": address, "password": PASSWORD})
    assert (login.status, login.body["code"]) == (401, "invalid_credentials")
    # The provider still sees both bookings, with the patient anonymised; the future one
    # was cancelled by the system.
    booked = world.providers.get(f"/providers/{provider['id']}/booked-appointments", token=provider["token"])
    assert booked.status == 200, booked.body
    mine = {a["id"]: a for a in booked.body if a["patient_id"] == patient["id"]}
    assert mine, booked.body
    assert {a["patient_name"] for a in mine.values()} == {ERASED_NAME}
    assert all(a["note"] is None for a in mine.values())
    upcoming = world.appointments.get(f"/appointments/{future}", token=provider["token"]).body
    assert (upcoming["status"], upcoming["cancelled_by"]) == ("cancelled", "system")
    assert upcoming["cancellation_reason"] == "account deleted"
    # The address is free again.
    again = world.auth.post(
        "/register", json_body={"name": name, "email": address, "password": PASSWORD, "role": "patient"}
    )
    assert again.status == 201, again.body
    assert again.body["id"] != patient["id"]


def test_erasure_needs_the_right_password(world: World, clinic: Any) -> None:
    _, patient, _ = clinic
    wrong = world.auth.delete("/me", json_body={"password": "not-it"}, token=patient["token"])
    assert (wrong.status, wrong.body["code"]) == (403, "wrong_password")
    missing = world.auth.delete("/me", json_body={}, token=patient["token"])
    assert missing.status == 422
    assert world.auth.get("/me", token=patient["token"]).body["email"] == patient["email"]


def test_a_provider_with_upcoming_confirmed_appointments_cannot_leave(world: World, clinic: Any) -> None:
    provider, _, _ = clinic
    response = world.auth.delete("/me", json_body={"password": PASSWORD}, token=provider["token"])
    assert (response.status, response.body["code"]) == (409, "has_future_appointments")
    admin = world.admin()
    by_admin = world.auth.delete(f"/users/{provider['id']}", token=admin["token"])
    assert (by_admin.status, by_admin.body["code"]) == (409, "has_future_appointments")
    assert world.auth.get("/me", token=provider["token"]).status == 200


def test_admins_erase_others_and_others_cannot(world: World, clinic: Any) -> None:
    _, patient, other = clinic
    refused = world.auth.delete(f"/users/{patient['id']}", token=other["token"])
    assert (refused.status, refused.body["code"]) == (404, "user_not_found")
    admin = world.admin()
    assert world.auth.delete("/users/999999999", token=admin["token"]).status == 404
    assert world.auth.delete(f"/users/{patient['id']}", token=admin["token"]).status == 204
    assert world.auth.get("/me", token=patient["token"]).status == 401
    trail = world.auth.get("/audit", token=admin["token"], query={"action": "user.erased"}).body["items"]
    [entry] = [e for e in trail if e["target_id"] == patient["id"]]
    assert entry["actor_id"] == admin["id"]
    assert patient["email"] not in json.dumps(entry)


def test_an_erased_provider_leaves_the_directory(world: World) -> None:
    provider = named_provider(world, f"Dr Gone-{uuid.uuid4().hex[:8]}")
    patient = person(world, "patient", f"Pia-{uuid.uuid4().hex[:10]}")

    def listed_from_its_id() -> list[int]:
        query = {"cursor": str(provider["id"] - 1), "limit": "1"}
        items = world.providers.get("/directory/providers", token=patient["token"], query=query).body["items"]
        return [item["id"] for item in items]

    def named_deleted() -> set[int]:
        query = {"q": "deleted user", "limit": "100"}
        items = world.providers.get("/directory/providers", token=patient["token"], query=query).body["items"]
        return {item["id"] for item in items}

    assert listed_from_its_id() == [provider["id"]]
    assert world.auth.delete("/me", json_body={"password": PASSWORD}, token=provider["token"]).status == 204
    assert provider["id"] not in listed_from_its_id()
    assert provider["id"] not in named_deleted()


@pytest.fixture(scope="module")
def lone_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "privacy") as url:
        yield url


@pytest.fixture
def lone_auth(settings: Settings, lone_database: str) -> Iterator[FunctionClient]:
    """The auth function on a database of its own, where one admin can be the only one."""
    empty_tables(lone_database)
    client = FunctionClient(load_function("auth"))
    container_of(client).configure(**{**settings.model_dump(), "database_url": lone_database})
    yield client
    client.close()


def test_the_last_admin_cannot_delete_itself(lone_auth: FunctionClient) -> None:
    admin = create_admin(container_of(lone_auth))
    alone = lone_auth.delete("/me", json_body={"password": PASSWORD}, token=admin.token)
    assert (alone.status, alone.body["code"]) == (409, "last_admin")
    by_id = lone_auth.delete(f"/users/{admin.id}", token=admin.token)
    assert (by_id.status, by_id.body["code"]) == (409, "last_admin")
    second = create_admin(container_of(lone_auth))
    assert lone_auth.delete("/me", json_body={"password": PASSWORD}, token=admin.token).status == 204
    # Now the other one is the last.
    last = lone_auth.delete(f"/users/{second.id}", token=second.token)
    assert (last.status, last.body["code"]) == (409, "last_admin")
