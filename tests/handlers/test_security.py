"""Security hardening through the real handlers: per-client rate limits, a lockout that
cannot be turned on a victim, re-authentication, sessions, e-mail verification and the
booking cap."""

from __future__ import annotations

import email
import re
import threading
import uuid
from datetime import timedelta
from email import policy
from typing import Any

import pytest
from sqlalchemy import text

from tests.builders import SLOT, create_admin, create_user, open_weekdays, unique_email
from tests.world import World, container_of

PASSWORD = "correct-horse"


def address() -> str:
    """A source address of the test's own (limits live in Redis for a minute)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def sign_in(world: World, email_address: str, password: str, source: str) -> Any:
    return world.auth.post("/token", form={"username": email_address, "password": password}, source_ip=source)


def registered(world: World, password: str = PASSWORD, role: str = "patient") -> dict[str, Any]:
    body = {"name": "Pat", "email": unique_email(), "password": password, "role": role}
    response = world.auth.post("/register", json_body=body, source_ip=address())
    assert response.status == 201, response.body
    return {**response.body, "password": password}


def queued_mail(world: World, user_id: int) -> list[email.message.EmailMessage]:
    with container_of(world.auth).unit_of_work() as session:
        rows = session.execute(
            text("SELECT message FROM outgoing_mail WHERE user_id = :id ORDER BY id"), {"id": user_id}
        ).scalars()
        return [email.message_from_bytes(bytes(raw), policy=policy.default) for raw in rows]  # type: ignore[misc]


def token_in(message: email.message.EmailMessage) -> str:
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"^([A-Za-z0-9_-]{40,})\r?$", body, re.MULTILINE)
    assert match, body
    return match.group(1)


# --- per-client rate limits ----------------------------------------------------------------


def test_one_address_hammering_sign_in_does_not_stop_another_address(world: World) -> None:
    world.settings(rate_limit_per_address="5/minute")
    victim = registered(world)
    attacker = address()

    answers = [sign_in(world, unique_email(), "guess-guess", attacker) for _ in range(6)]
    assert [a.status for a in answers] == [401] * 5 + [429]
    assert answers[0].headers["ratelimit-limit"] == "5" and answers[0].headers["ratelimit-remaining"] == "4"
    refused = answers[-1]
    assert refused.body["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0" and int(refused.headers["ratelimit-reset"]) >= 1

    own = sign_in(world, victim["email"], PASSWORD, address())
    assert own.status == 200 and own.headers["ratelimit-remaining"] == "4"


def test_one_account_is_limited_across_addresses(world: World) -> None:
    world.settings(rate_limit_per_account="3/minute")
    user = registered(world)
    statuses = [sign_in(world, user["email"], PASSWORD, address()).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_with_redis_down_the_limiter_fails_open_and_warns_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.settings(rate_limit_per_address="1/minute", redis_url="redis://127.0.0.1:9/0")
    container_of(world.auth).__dict__.pop("rate_limiter", None)
    user = registered(world)
    source = address()
    with caplog.at_level("WARNING"):
        statuses = [sign_in(world, user["email"], PASSWORD, source).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len([r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]) == 1


# --- the lockout ------------------------------------------------------------------------------


def test_an_attackers_address_is_locked_while_the_owner_signs_in_from_its_own(world: World) -> None:
    owner = registered(world)
    attacker = address()
    failures = [sign_in(world, owner["email"], "wrong-password", attacker).status for _ in range(5)]
    assert failures == [401] * 5
    locked = sign_in(world, owner["email"], PASSWORD, attacker)  # even the right password
    assert (locked.status, locked.body["code"]) == (429, "login_locked")
    assert sign_in(world, owner["email"], PASSWORD, address()).status == 200


def test_the_per_account_ceiling_holds_whatever_the_addresses(world: World) -> None:
    world.settings(login_account_max_failures=6)
    owner = registered(world)
    for _ in range(3):
        source = address()
        assert [sign_in(world, owner["email"], "wrong-password", source).status for _ in range(2)] == [401, 401]
    assert sign_in(world, owner["email"], PASSWORD, address()).status == 429
    world.clock.advance(minutes=16)
    assert sign_in(world, owner["email"], PASSWORD, address()).status == 200


def test_guessing_the_current_password_is_counted_and_locked(world: World) -> None:
    user = registered(world)
    token = sign_in(world, user["email"], PASSWORD, address()).body["access_token"]
    source = address()
    body = {"current_password": "not-it-at-all", "new_password": "brand-new-pass"}
    statuses = [world.auth.post("/reset-password", json_body=body, token=token, source_ip=source) for _ in range(6)]
    assert [s.status for s in statuses] == [400] * 5 + [429]
    assert statuses[-1].body["code"] == "login_locked"


# --- passwords and sessions ---------------------------------------------------------------------


def test_a_password_is_never_stripped(world: World) -> None:
    user = registered(world, password="  spaced secret  ")
    assert sign_in(world, user["email"], "  spaced secret  ", address()).status == 200
    assert sign_in(world, user["email"], "spaced secret", address()).status == 401


def test_logout_revokes_its_family_and_logout_all_every_token(world: World) -> None:
    user = registered(world)
    first = sign_in(world, user["email"], PASSWORD, address()).body
    second = sign_in(world, user["email"], PASSWORD, address()).body

    assert world.auth.post("/logout", json_body={"refresh_token": first["refresh_token"]}).status == 204
    assert world.auth.post("/token/refresh", json_body={"refresh_token": first["refresh_token"]}).status == 401
    assert world.auth.post("/logout", json_body={"refresh_token": "never-issued"}).status == 204
    renewed = world.auth.post("/token/refresh", json_body={"refresh_token": second["refresh_token"]})
    assert renewed.status == 200

    assert world.auth.post("/logout-all", token=renewed.body["access_token"]).status == 204
    assert world.auth.get("/me", token=renewed.body["access_token"]).status == 401
    assert world.auth.post("/token/refresh", json_body={"refresh_token": renewed.body["refresh_token"]}).status == 401


def test_a_password_change_retires_reset_links_and_tells_the_owner(world: World) -> None:
    user = registered(world)
    token = sign_in(world, user["email"], PASSWORD, address()).body["access_token"]
    assert world.auth.post("/password-reset/request", json_body={"email": user["email"]}).status == 202
    container_of(world.auth).accounts.process_reset_requests()
    [reset_mail] = queued_mail(world, user["id"])
    reset_token = token_in(reset_mail)

    body = {"current_password": PASSWORD, "new_password": "changed-password"}
    assert world.auth.post("/reset-password", json_body=body, token=token).status == 200
    late = world.auth.post("/password-reset/confirm", json_body={"token": reset_token, "new_password": "x" * 12})
    assert (late.status, late.body["code"]) == (400, "invalid_reset_token")
    subjects = [str(m["Subject"]) for m in queued_mail(world, user["id"])]
    assert subjects[-1] == "Your Reservations password was changed"


def test_admins_reauthenticate_for_their_own_password_and_other_admins(world: World) -> None:
    container = container_of(world.auth)
    acting, other_admin = create_admin(container), create_admin(container)
    patient = registered(world)
    own = world.auth.post(
        "/reset-password", json_body={"email": acting.email, "new_password": "fresh-password"}, token=acting.token
    )
    assert (own.status, own.body["code"]) == (400, "missing_field")
    bare = {"email": other_admin.email, "new_password": "fresh-password"}
    assert world.auth.post("/reset-password", json_body=bare, token=acting.token).body["code"] == "missing_field"
    wrong = world.auth.post("/reset-password", json_body={**bare, "current_password": "not-mine"}, token=acting.token)
    assert (wrong.status, wrong.body["code"]) == (400, "wrong_password")
    right = world.auth.post("/reset-password", json_body={**bare, "current_password": "password1"}, token=acting.token)
    assert right.status == 200
    for_patient = {"email": patient["email"], "new_password": "fresh-password"}
    assert world.auth.post("/reset-password", json_body=for_patient, token=acting.token).status == 200


# --- e-mail verification and booking abuse -------------------------------------------------------


def test_unverified_patients_cannot_reserve_where_verification_is_required(world: World) -> None:
    world.settings(require_verified_email=True)
    provider = create_user(container_of(world.providers), "provider")
    open_weekdays(container_of(world.providers), provider)
    user = registered(world)
    token = sign_in(world, user["email"], PASSWORD, address()).body["access_token"]
    reserve = {"provider_id": provider.id, "start_time": SLOT.isoformat()}
    refused = world.appointments.post("/appointments/reserve", json_body=reserve, token=token)
    assert (refused.status, refused.body["code"]) == (403, "email_not_verified")

    assert world.auth.post("/email-verification/request", token=token).status == 202
    [message] = queued_mail(world, user["id"])
    confirmed = world.auth.post("/email-verification/confirm", json_body={"token": token_in(message)})
    assert confirmed.status == 200 and confirmed.body["email_verified"] is True
    again = world.auth.post("/email-verification/confirm", json_body={"token": token_in(message)})
    assert (again.status, again.body["code"]) == (400, "invalid_verification_token")
    assert world.auth.get("/me", token=token).body["email_verified"] is True
    assert world.appointments.post("/appointments/reserve", json_body=reserve, token=token).status == 201


def test_the_future_appointments_cap_cannot_be_raced_past(world: World) -> None:
    world.settings(max_future_appointments_per_patient=2, max_active_holds=50)
    provider = create_user(container_of(world.providers), "provider")
    open_weekdays(container_of(world.providers), provider)
    patient = create_user(container_of(world.auth), "patient")
    start = threading.Barrier(6)
    answers: list[Any] = []

    def reserve(index: int) -> None:
        body = {"provider_id": provider.id, "start_time": (SLOT + timedelta(minutes=15 * index)).isoformat()}
        start.wait()
        answers.append(world.appointments.post("/appointments/reserve", json_body=body, token=patient.token))

    threads = [threading.Thread(target=reserve, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status for a in answers) == [201, 201, 409, 409, 409, 409]
    assert {a.body["code"] for a in answers if a.status == 409} == {"too_many_appointments"}
