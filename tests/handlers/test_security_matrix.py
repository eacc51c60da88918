"""Every endpoint called by every role and by no one: the status each gets, and that no
answer carries another user's data."""

from __future__ import annotations

import pytest

from tests.conftest import unique_email
from tests.handlers.world import World

ROLES = ("nobody", "patient", "other_patient", "provider", "other_provider", "admin")

# (function, method, path template, body template) -> expected status per caller.
# {P} is the provider, {A} an appointment the patient holds with that provider.
MATRIX: list[tuple[str, str, str, dict | None, dict[str, int]]] = [
    (
        "auth",
        "GET",
        "/me",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 200},
    ),
    (
        "providers",
        "GET",
        "/providers",
        None,
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 403, "other_provider": 403, "admin": 200},
    ),
    (
        "providers",
        "POST",
        "/providers/{P}/availability",
        {"exceptions": [{"date": "2027-01-20", "times": []}]},
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 200, "other_provider": 403, "admin": 403},
    ),
    (
        "providers",
        "GET",
        "/providers/{P}/availability",
        None,
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 200, "other_provider": 403, "admin": 200},
    ),
    (
        "providers",
        "GET",
        "/providers/{P}/time-slots",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 200},
    ),
    (
        "providers",
        "GET",
        "/providers/{P}/booked-appointments",
        None,
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 200, "other_provider": 403, "admin": 200},
    ),
    (
        "appointments",
        "POST",
        "/appointments/reserve",
        {"provider_id": "{P}", "start_time": "2027-01-07T10:00:00Z"},
        {"nobody": 401, "patient": 201, "other_patient": 409, "provider": 403, "other_provider": 403, "admin": 403},
    ),
    (
        "appointments",
        "POST",
        "/appointments/confirm",
        {"slot_id": "{A}"},
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 403, "other_provider": 403, "admin": 403},
    ),
    (
        "appointments",
        "GET",
        "/appointments/{A}",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 404},
    ),
    (
        "appointments",
        "GET",
        "/appointments",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 403},
    ),
    (
        "appointments",
        "POST",
        "/appointments/cancel",
        {"slot_id": "{A}"},
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 404},
    ),
    # The victim is other_patient: naming one's own e-mail is a self-service change, which
    # needs current_password (400); anyone but an admin naming another is refused (403).
    (
        "auth",
        "POST",
        "/reset-password",
        {"email": "{victim}", "new_password": "another-pass"},
        {"nobody": 401, "patient": 403, "other_patient": 400, "provider": 403, "other_provider": 403, "admin": 200},
    ),
]


def _fill(value: object, names: dict[str, object]) -> object:
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in names:
        return names[value[1:-1]]
    if isinstance(value, str):
        for key, replacement in names.items():
            value = value.replace("{" + key + "}", str(replacement))
    return value


@pytest.fixture
def cast(world: World, runtime) -> dict:  # type: ignore[no-untyped-def]
    people = {role: world.user(role.removeprefix("other_")) for role in ROLES if role not in ("nobody", "admin")}
    email = unique_email("admin")
    with runtime.transaction() as session:
        runtime.accounts(session, world.clock()).create_first_admin(name="Admin", email=email, password="admin-pass")
    token = world.auth.post("/token", form={"username": email, "password": "admin-pass"}).body["access_token"]
    people["admin"] = {"token": token}
    people["nobody"] = {"token": None}
    provider = people["provider"]
    week = {
        "general_schedule": {
            "start_date": "2027-01-04",
            "end_date": "2027-01-31",
            "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
        }
    }
    assert (
        world.providers.post(
            f"/providers/{provider['id']}/availability", json_body=week, token=provider["token"]
        ).status
        == 200
    )
    held = world.appointments.post(
        "/appointments/reserve",
        token=people["patient"]["token"],
        json_body={"provider_id": provider["id"], "start_time": "2027-01-06T09:00:00Z"},
    )
    assert held.status == 201
    people["appointment"] = held.body["id"]
    return people


@pytest.mark.parametrize(
    ("function", "method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for _, m, p, _, _ in MATRIX]
)
def test_every_endpoint_for_every_caller(
    world: World, cast: dict, function: str, method: str, path: str, body: dict | None, expected: dict[str, int]
) -> None:
    client = getattr(world, function)
    names = {"P": cast["provider"]["id"], "A": cast["appointment"], "victim": cast["other_patient"]["email"]}
    for role in ROLES:
        response = client.call(method, str(_fill(path, names)), json_body=_fill(body, names), token=cast[role]["token"])
        assert response.status == expected[role], (role, method, path, response.body)
        if response.status >= 400:
            assert set(response.body) == {"detail", "code"} or isinstance(response.body.get("detail"), list)
        if response.status == 401:
            assert response.headers["www-authenticate"] == "Bearer"


def test_listings_never_show_other_users_data(world: World, cast: dict) -> None:
    mine = world.appointments.get("/appointments", token=cast["patient"]["token"]).body
    theirs = world.appointments.get("/appointments", token=cast["other_patient"]["token"]).body
    other_provider = world.appointments.get("/appointments", token=cast["other_provider"]["token"]).body
    assert [a["id"] for a in mine] == [cast["appointment"]]
    assert theirs == []
    assert other_provider == []
    me = world.auth.get("/me", token=cast["other_patient"]["token"]).body
    assert me["id"] == cast["other_patient"]["id"]
