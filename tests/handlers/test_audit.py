"""The audit trail through the real handlers: each recorded action writes one entry with
its actor and API Gateway's request id, Postgres refuses to change entries, and the
admins' search and everyone's own activity read them back newest first."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.builders import SLOT, create_admin, create_user, open_weekdays, unique_email
from tests.support import FunctionClient, Response, load_function
from tests.world import World, container_of

PASSWORD = "correct-horse"


def entries(world: World, request_id: str) -> list[Any]:
    with container_of(world.auth).unit_of_work() as session:
        return list(
            session.execute(
                text("SELECT * FROM audit_log WHERE request_id = :id ORDER BY id"), {"id": request_id}
            ).mappings()
        )


def audited(world: World, call: Callable[[str], Response]) -> tuple[Response, list[Any]]:
    """Make one request with a request id of its own; its answer and its audit entries."""
    request_id = uuid.uuid4().hex
    response = call(request_id)
    return response, entries(world, request_id)


def test_account_actions_are_recorded_with_actor_and_request_id(world: World) -> None:
    email = unique_email()
    body = {"name": "Ada", "email": email, "password": PASSWORD, "role": "patient"}
    response, [registered] = audited(world, lambda rid: world.auth.post("/register", json_body=body, request_id=rid))
    user_id = response.body["id"]
    assert (registered["action"], registered["actor_id"], registered["target_id"]) == (
        "user.registered",
        user_id,
        user_id,
    )
    form = {"username": email, "password": "wrong-password"}
    _, [failed] = audited(
        world, lambda rid: world.auth.post("/token", form=form, request_id=rid, source_ip="192.0.2.9")
    )
    assert (failed["action"], failed["actor_role"], failed["target_id"]) == ("login.failed", "anonymous", user_id)
    assert failed["source_ip"] == "192.0.2.9"
    assert failed["details"] == {"known_account": True}
    form["password"] = PASSWORD
    signed_in, [succeeded] = audited(world, lambda rid: world.auth.post("/token", form=form, request_id=rid))
    assert (succeeded["action"], succeeded["actor_id"]) == ("login.succeeded", user_id)
    token, refresh = signed_in.body["access_token"], signed_in.body["refresh_token"]

    _, [profile] = audited(
        world, lambda rid: world.auth.patch("/me", json_body={"name": "Ada L"}, token=token, request_id=rid)
    )
    assert (profile["action"], profile["details"]) == ("user.profile_changed", {"fields": ["name"]})
    world.auth.post("/token/refresh", json_body={"refresh_token": refresh})
    _, [reused] = audited(
        world, lambda rid: world.auth.post("/token/refresh", json_body={"refresh_token": refresh}, request_id=rid)
    )
    assert (reused["action"], reused["target_id"]) == ("refresh_token.reused", user_id)
    fresh = world.auth.post("/token", form=form).body
    change = {"current_password": PASSWORD, "new_password": "another-password"}
    _, changed = audited(
        world,
        lambda rid: world.auth.post("/reset-password", json_body=change, token=fresh["access_token"], request_id=rid),
    )
    assert [e["action"] for e in changed] == ["password.changed"]
    again = world.auth.post("/token", form={"username": email, "password": "another-password"}).body
    _, [logged_out] = audited(
        world,
        lambda rid: world.auth.post("/logout", json_body={"refresh_token": again["refresh_token"]}, request_id=rid),
    )
    assert (logged_out["action"], logged_out["actor_id"]) == ("logout", user_id)
    # Nothing personal in any of them: ids and field names only.
    for entry in (registered, failed, succeeded, profile, reused, *changed, logged_out):
        assert email not in str(entry["details"]) and "Ada" not in str(entry["details"])


def test_admin_schedule_and_webhook_actions_are_recorded(world: World) -> None:
    container = container_of(world.auth)
    admin = create_admin(container)
    body = {"name": "Root", "email": unique_email(), "password": PASSWORD, "role": "admin"}
    _, [created] = audited(
        world, lambda rid: world.auth.post("/register", json_body=body, token=admin.token, request_id=rid)
    )
    assert (created["action"], created["actor_id"]) == ("admin.created", admin.id)
    provider = create_user(container_of(world.providers), "provider")
    path = f"/providers/{provider.id}"
    _, [rules] = audited(
        world,
        lambda rid: world.providers.patch(
            path, json_body={"rules": {"min_notice_hours": 2}}, token=provider.token, request_id=rid
        ),
    )
    assert (rules["action"], rules["target_type"], rules["details"]["rules"]) == (
        "provider.rules_changed",
        "provider",
        ["min_notice_hours"],
    )
    week = {
        "general_schedule": {
            "start_date": "2027-01-04",
            "end_date": "2027-01-10",
            "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
        }
    }
    _, posted = audited(
        world,
        lambda rid: world.providers.post(f"{path}/availability", json_body=week, token=provider.token, request_id=rid),
    )
    assert [(e["action"], e["target_type"]) for e in posted] == [("availability.posted", "availability")]
    visit = {"name": "Long", "duration_minutes": 60}
    added, [made] = audited(
        world,
        lambda rid: world.providers.post(f"{path}/visit-types", json_body=visit, token=provider.token, request_id=rid),
    )
    assert (made["action"], made["target_id"]) == ("visit_type.created", added.body["id"])
    integrations = FunctionClient(load_function("integrations"))
    container_of(integrations).clock = world.clock
    try:
        webhook = {"url": "https://example.com/hook", "events": ["*"]}
        hooked, [hook] = audited(
            world, lambda rid: integrations.post("/webhooks", json_body=webhook, token=provider.token, request_id=rid)
        )
        hook_path = f"/webhooks/{hooked.body['id']}"
        _, [rotated] = audited(
            world, lambda rid: integrations.post(f"{hook_path}/rotate-secret", token=provider.token, request_id=rid)
        )
        _, [deleted] = audited(world, lambda rid: integrations.delete(hook_path, token=provider.token, request_id=rid))
    finally:
        integrations.close()
    assert [(e["action"], e["target_id"]) for e in (hook, rotated, deleted)] == [
        ("webhook.created", hooked.body["id"]),
        ("webhook.secret_rotated", hooked.body["id"]),
        ("webhook.deleted", hooked.body["id"]),
    ]
    assert hooked.body["secret"] not in str([hook["details"], rotated["details"]])


def test_appointment_transitions_are_recorded_once_each(world: World) -> None:
    container = container_of(world.appointments)
    provider, patient = create_user(container, "provider"), create_user(container, "patient")
    open_weekdays(container, provider)
    reserve = {"provider_id": provider.id, "start_time": SLOT.isoformat()}
    held, [reserved] = audited(
        world,
        lambda rid: world.appointments.post(
            "/appointments/reserve", json_body=reserve, token=patient.token, request_id=rid, source_ip="192.0.2.44"
        ),
    )
    assert (reserved["action"], reserved["actor_id"], reserved["subject_id"], reserved["source_ip"]) == (
        "appointment.reserved",
        patient.id,
        provider.id,
        "192.0.2.44",
    )
    _, [cancelled] = audited(
        world,
        lambda rid: world.appointments.post(
            "/appointments/cancel",
            json_body={"slot_id": held.body["id"]},
            token=provider.token,
            request_id=rid,
            source_ip="198.51.100.7",
        ),
    )
    assert (cancelled["action"], cancelled["actor_id"], cancelled["subject_id"], cancelled["source_ip"]) == (
        "appointment.cancelled",
        provider.id,
        patient.id,
        "198.51.100.7",
    )
    # The history (exported, kept for the other party) carries the address to the audit
    # entry but never keeps it.
    with container.unit_of_work() as session:
        kept = session.execute(
            text("SELECT count(*) FROM appointment_history WHERE appointment_id = :id AND source_ip IS NOT NULL"),
            {"id": held.body["id"]},
        ).scalar_one()
    assert kept == 0


def test_postgres_refuses_to_change_an_entry(world: World) -> None:
    create_user(container_of(world.auth), "patient")  # at least one entry exists
    with container_of(world.auth).unit_of_work() as session:
        newest = session.execute(text("SELECT max(id) FROM audit_log")).scalar_one()
    for statement in (
        "UPDATE audit_log SET action = 'rewritten' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"), container_of(world.auth).unit_of_work() as session:
            session.execute(text(statement), {"id": newest})


def test_admins_search_the_trail_and_everyone_sees_their_own_activity(world: World) -> None:
    container = container_of(world.auth)
    admin, patient, other = (
        create_admin(container),
        create_user(container, "patient"),
        create_user(container, "patient"),
    )
    for _ in range(3):
        world.auth.patch("/me", json_body={"notify_email": True}, token=patient.token)
    world.auth.patch("/me", json_body={"notify_email": True}, token=other.token)

    refused = world.auth.get("/audit", token=patient.token)
    assert (refused.status, refused.body["code"]) == (403, "admin_required")
    query = {"actor_id": str(patient.id), "action": "user.profile_changed", "limit": "2"}
    first = world.auth.get("/audit", token=admin.token, query=query).body
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = world.auth.get("/audit", token=admin.token, query={**query, "cursor": first["next_cursor"]}).body
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)

    mine = world.auth.get("/me/activity", token=patient.token, query={"limit": "200"}).body["items"]
    assert mine and all(patient.id in (e["actor_id"], e["target_id"]) for e in mine)
    assert other.id not in {e["actor_id"] for e in mine}
    assert world.auth.get("/me/activity", token=patient.token, query={"cursor": "x"}).status == 422
