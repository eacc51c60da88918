"""The auth function, driven by API Gateway v2.0 events into the real Lambda handler."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from reservations.adapters.security import SigningKeys, TokenCodec
from tests.builders import unique_email
from tests.support import FunctionClient

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def codec_with(
    secret: str = TEST_SECRET, issuer: str = "reservations", audience: str = "reservations-api"
) -> TokenCodec:
    return TokenCodec(SigningKeys.from_secret(secret), issuer=issuer, audience=audience)


# --- registration ---------------------------------------------------------------------


def test_register_returns_profile_with_default_timezone(auth: FunctionClient) -> None:
    email = unique_email()
    response = auth.post(
        "/register", json_body={"name": "Pat", "email": email, "password": "password1", "role": "patient"}
    )
    assert response.status == 201
    assert set(response.body) == {"id", "name", "email", "role", "timezone", "notify_email", "email_verified"}
    assert response.body["email"] == email
    assert response.body["role"] == "patient"
    assert response.body["timezone"] == "UTC"


def test_provider_registers_with_timezone(auth: FunctionClient) -> None:
    body = {
        "name": "Dr",
        "email": unique_email(),
        "password": "password1",
        "role": "provider",
        "timezone": "America/New_York",
    }
    response = auth.post("/register", json_body=body)
    assert response.status == 201
    assert response.body["timezone"] == "America/New_York"


def test_duplicate_email_in_any_case_conflicts(auth: FunctionClient) -> None:
    email = unique_email()
    body = {"name": "A", "email": email, "password": "password1", "role": "patient"}
    assert auth.post("/register", json_body=body).status == 201
    response = auth.post("/register", json_body={**body, "email": email.upper()})
    assert response.status == 409
    assert response.body == {"detail": "an account with this e-mail already exists", "code": "email_taken"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "short12"),
        ("password", "x" * 129),
        ("email", "not-an-email"),
        ("timezone", "Mars/Olympus"),
        ("role", "superuser"),
        ("name", ""),
    ],
)
def test_invalid_registration_fields_are_422(auth: FunctionClient, field: str, value: str) -> None:
    body = {"name": "A", "email": unique_email(), "password": "password1", "role": "patient", field: value}
    response = auth.post("/register", json_body=body)
    assert response.status == 422
    assert "detail" in response.body


def test_schema_errors_keep_fastapi_format(auth: FunctionClient) -> None:
    response = auth.post("/register", json_body={"name": "A"})
    assert response.status == 422
    assert isinstance(response.body["detail"], list)
    assert {tuple(item["loc"]) for item in response.body["detail"]} >= {("body", "email"), ("body", "password")}


def test_malformed_json_is_422_not_500(auth: FunctionClient) -> None:
    response = auth.post("/register", raw_body='{"name": ', headers={"content-type": "application/json"})
    assert response.status == 422


def test_admin_role_needs_an_admin_token(auth: FunctionClient, register, login) -> None:  # type: ignore[no-untyped-def]
    body = {"name": "Root", "email": unique_email("admin"), "password": "password1", "role": "admin"}
    assert auth.post("/register", json_body=body).status == 403
    patient_token = login(register("patient"))["access_token"]
    assert auth.post("/register", json_body=body, token=patient_token).status == 403


def test_admin_creates_admin(auth: FunctionClient, admin_token: str) -> None:
    body = {"name": "Second", "email": unique_email("admin"), "password": "password1", "role": "admin"}
    response = auth.post("/register", json_body=body, token=admin_token)
    assert response.status == 201
    assert response.body["role"] == "admin"


# --- tokens -------------------------------------------------------------------------------


def test_token_with_original_form_and_use_it(auth: FunctionClient, register) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    response = auth.post("/token", form={"username": user["email"], "password": user["password"]})
    assert response.status == 200
    assert response.body["token_type"] == "bearer"
    assert response.body["expires_in"] == 30 * 60
    assert response.body["refresh_token"]
    me = auth.get("/me", token=response.body["access_token"])
    assert me.status == 200
    assert me.body["id"] == user["id"]


def test_wrong_password_and_unknown_user_get_the_same_401(auth: FunctionClient, register) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    wrong = auth.post("/token", form={"username": user["email"], "password": "wrong-password"})
    unknown = auth.post("/token", form={"username": unique_email(), "password": "wrong-password"})
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body == {"detail": "incorrect e-mail or password", "code": "invalid_credentials"}
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_token_requires_form_fields(auth: FunctionClient) -> None:
    assert auth.post("/token", form={"username": "a@example.com"}).status == 422


def test_lockout_after_five_failures_even_with_right_password(auth: FunctionClient, register) -> None:  # type: ignore[no-untyped-def]
    user, other = register("patient"), register("patient")
    for _ in range(5):
        assert auth.post("/token", form={"username": user["email"], "password": "bad-password"}).status == 401
    locked = auth.post("/token", form={"username": user["email"].upper(), "password": user["password"]})
    assert locked.status == 429
    assert locked.body["code"] == "login_locked"
    assert 0 < int(locked.headers["retry-after"]) <= 15 * 60
    # Another account is unaffected.
    assert auth.post("/token", form={"username": other["email"], "password": other["password"]}).status == 200


def test_success_before_the_limit_resets_the_count(auth: FunctionClient, register) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    for _ in range(4):
        auth.post("/token", form={"username": user["email"], "password": "bad-password"})
    assert auth.post("/token", form={"username": user["email"], "password": user["password"]}).status == 200
    for _ in range(4):
        auth.post("/token", form={"username": user["email"], "password": "bad-password"})
    assert auth.post("/token", form={"username": user["email"], "password": user["password"]}).status == 200


def test_refresh_rotates_and_a_refresh_token_works_once(auth: FunctionClient, register, login) -> None:  # type: ignore[no-untyped-def]
    pair = login(register("patient"))
    rotated = auth.post("/token/refresh", json_body={"refresh_token": pair["refresh_token"]})
    assert rotated.status == 200
    assert rotated.body["refresh_token"] != pair["refresh_token"]
    assert auth.get("/me", token=rotated.body["access_token"]).status == 200
    reused = auth.post("/token/refresh", json_body={"refresh_token": pair["refresh_token"]})
    assert reused.status == 401
    assert reused.body["code"] == "refresh_token_reused"
    # Reuse revokes the family: the rotated token dies too.
    assert auth.post("/token/refresh", json_body={"refresh_token": rotated.body["refresh_token"]}).status == 401


def test_unknown_refresh_token_is_401(auth: FunctionClient) -> None:
    response = auth.post("/token/refresh", json_body={"refresh_token": "nope"})
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- JWT attack matrix --------------------------------------------------------------------


def _forge(claims: dict, *, key: str = TEST_SECRET, alg: str = "HS256", kid: str | None = None) -> str:
    headers = {"kid": kid or SigningKeys.from_secret(TEST_SECRET).active_kid}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _claims(user_id: int, **overrides: object) -> dict:
    now = int(time.time())
    claims: dict = {
        "sub": str(user_id),
        "role": "patient",
        "tv": 0,
        "typ": "access",
        "iss": "reservations",
        "aud": "reservations-api",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "attack",
    [
        "missing",
        "garbage",
        "alg_none",
        "wrong_key",
        "tampered",
        "expired",
        "wrong_iss",
        "wrong_aud",
        "unknown_kid",
        "refresh_as_bearer",
        "no_exp",
        "other_role",
    ],
)
def test_jwt_attacks_get_401(auth: FunctionClient, register, login, attack: str) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    pair = login(user)
    uid = user["id"]
    kid = SigningKeys.from_secret(TEST_SECRET).active_kid
    if attack == "missing":
        token = None
    elif attack == "garbage":
        token = "not.a.jwt"
    elif attack == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(uid))}."
    elif attack == "wrong_key":
        token = _forge(_claims(uid), key="another-secret-key-that-is-long-enough-000")
    elif attack == "tampered":
        header, _, signature = pair["access_token"].split(".")
        token = f"{header}.{_b64(_claims(uid + 1))}.{signature}"
    elif attack == "expired":
        token = _forge(_claims(uid, iat=int(time.time()) - 3600, exp=int(time.time()) - 60))
    elif attack == "wrong_iss":
        token = _forge(_claims(uid, iss="someone-else"))
    elif attack == "wrong_aud":
        token = _forge(_claims(uid, aud="another-api"))
    elif attack == "unknown_kid":
        token = _forge(_claims(uid), kid="rotated-away")
    elif attack == "refresh_as_bearer":
        token = pair["refresh_token"]
    elif attack == "no_exp":
        claims = _claims(uid)
        del claims["exp"]
        token = _forge(claims)
    else:  # a validly signed token claiming a role the account does not have
        token = _forge(_claims(uid, role="admin"))
    response = auth.get("/me", token=token)
    assert response.status == 401, (attack, response.body)
    assert response.headers["www-authenticate"] == "Bearer"
    assert set(response.body) == {"detail", "code"}


def test_a_forged_token_with_the_right_key_is_accepted(auth: FunctionClient, register) -> None:
    """Control for the matrix: the forging helper itself produces valid tokens."""
    user = register("patient")
    assert auth.get("/me", token=_forge(_claims(user["id"]))).status == 200


# --- passwords ----------------------------------------------------------------------------


def test_change_own_password_revokes_earlier_tokens(auth: FunctionClient, register, login) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    first, second = login(user), login(user)
    response = auth.post(
        "/reset-password",
        token=first["access_token"],
        json_body={"current_password": user["password"], "new_password": "brand-new-password"},
    )
    assert response.status == 200
    for pair in (first, second):
        assert auth.get("/me", token=pair["access_token"]).status == 401
        assert auth.post("/token/refresh", json_body={"refresh_token": pair["refresh_token"]}).status == 401
    assert auth.post("/token", form={"username": user["email"], "password": user["password"]}).status == 401
    fresh = auth.post("/token", form={"username": user["email"], "password": "brand-new-password"})
    assert fresh.status == 200
    assert auth.get("/me", token=fresh.body["access_token"]).status == 200


def test_change_own_password_needs_the_current_one(auth: FunctionClient, register, login) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    token = login(user)["access_token"]
    wrong = auth.post(
        "/reset-password", token=token, json_body={"current_password": "nope-nope", "new_password": "another-pass"}
    )
    assert wrong.status == 400
    assert wrong.body["code"] == "wrong_password"
    missing = auth.post("/reset-password", token=token, json_body={"new_password": "another-pass"})
    assert missing.status == 400
    short = auth.post(
        "/reset-password", token=token, json_body={"current_password": user["password"], "new_password": "short"}
    )
    assert short.status == 422
    assert (
        auth.post("/reset-password", json_body={"current_password": "x", "new_password": "another-pass"}).status == 401
    )


def test_admin_sets_anyones_password(auth: FunctionClient, register, login, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    user = register("provider")
    old = login(user)
    response = auth.post(
        "/reset-password", token=admin_token, json_body={"email": user["email"], "new_password": "set-by-admin"}
    )
    assert response.status == 200
    assert auth.get("/me", token=old["access_token"]).status == 401
    assert auth.post("/token", form={"username": user["email"], "password": "set-by-admin"}).status == 200
    unknown = auth.post(
        "/reset-password", token=admin_token, json_body={"email": unique_email(), "new_password": "set-by-admin"}
    )
    assert unknown.status == 404


def test_non_admin_cannot_set_another_users_password(auth: FunctionClient, register, login) -> None:  # type: ignore[no-untyped-def]
    victim, attacker = register("patient"), register("patient")
    token = login(attacker)["access_token"]
    response = auth.post(
        "/reset-password", token=token, json_body={"email": victim["email"], "new_password": "hijacked-1"}
    )
    assert response.status == 403
    assert auth.post("/token", form={"username": victim["email"], "password": victim["password"]}).status == 200


def test_oversized_body_is_413(auth: FunctionClient) -> None:
    response = auth.post("/register", raw_body="x" * (65 * 1024), headers={"content-type": "application/json"})
    assert response.status == 413
    assert response.body["code"] == "payload_too_large"


def test_unknown_method_on_route_is_a_json_error(auth: FunctionClient) -> None:
    response = auth.call("PUT", "/me")
    assert response.status == 405
    assert set(response.body) == {"detail", "code"}


def test_expired_token_from_the_service_clock_is_rejected(register) -> None:  # type: ignore[no-untyped-def]
    user = register("patient")
    codec = codec_with()
    past = datetime.now(UTC) - timedelta(hours=2)
    token = codec.issue_access(user_id=user["id"], role="patient", token_version=0, now=past, ttl=timedelta(minutes=30))
    with pytest.raises(Exception, match="expired"):
        codec.decode_access(token, now=datetime.now(UTC))
