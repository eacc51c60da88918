"""Every endpoint called by every role and by no one: the status each gets, and that no
answer carries another user's data. Each cell (endpoint x caller) is its own test with a
fresh cast, so no expectation depends on what another caller did first."""

from __future__ import annotations

import pytest

from tests.world import World

ROLES = ("nobody", "patient", "other_patient", "provider", "other_provider", "admin")

# (function, method, path template, body template) -> expected status per caller.
# {P} is the provider, {A} an appointment the patient holds with that provider (at
# {HELD}, Wednesday 6 January 09:00 UTC); every other weekday slot in January is free.
HELD = "2027-01-06T09:00:00Z"
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
    # A free slot: any patient may hold it.
    (
        "appointments",
        "POST",
        "/appointments/reserve",
        {"provider_id": "{P}", "start_time": "2027-01-07T10:00:00Z"},
        {"nobody": 401, "patient": 201, "other_patient": 201, "provider": 403, "other_provider": 403, "admin": 403},
    ),
    # The slot the patient holds ({A}): taken for everyone else, whoever asks first.
    (
        "appointments",
        "POST",
        "/appointments/reserve",
        {"provider_id": "{P}", "start_time": HELD},
        {"nobody": 401, "patient": 409, "other_patient": 409, "provider": 403, "other_provider": 403, "admin": 403},
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
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 200},
    ),
    (
        "appointments",
        "GET",
        "/appointments",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 200},
    ),
    (
        "appointments",
        "POST",
        "/appointments/cancel",
        {"slot_id": "{A}"},
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 200},
    ),
    # The admin desk: admins may move, cancel and read any appointment and its history.
    (
        "appointments",
        "POST",
        "/appointments/reschedule",
        {"slot_id": "{A}", "start_time": "2027-01-07T11:00:00Z"},
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 200},
    ),
    (
        "appointments",
        "GET",
        "/appointments/{A}/history",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 404, "provider": 200, "other_provider": 404, "admin": 200},
    ),
    # Attendance: providers and admins only, and not before the (held) appointment's start.
    (
        "appointments",
        "POST",
        "/appointments/{A}/attendance",
        {"status": "completed"},
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 409, "other_provider": 404, "admin": 409},
    ),
    (
        "providers",
        "GET",
        "/providers/{P}",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 200},
    ),
    (
        "providers",
        "PATCH",
        "/providers/{P}",
        {"bio": "Knees and hips."},
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 200, "other_provider": 403, "admin": 200},
    ),
    (
        "providers",
        "POST",
        "/providers/{P}/visit-types",
        {"name": "Consult", "duration_minutes": 30},
        {"nobody": 401, "patient": 403, "other_patient": 403, "provider": 201, "other_provider": 403, "admin": 201},
    ),
    (
        "providers",
        "GET",
        "/directory/providers",
        None,
        {"nobody": 401, "patient": 200, "other_patient": 200, "provider": 200, "other_provider": 200, "admin": 200},
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
def cast(world: World) -> dict:
    people = {role: world.user(role.removeprefix("other_")) for role in ROLES if role not in ("nobody", "admin")}
    people["admin"] = world.admin()
    people["nobody"] = {"token": None}
    provider = people["provider"]
    week = {
        "general_schedule": {
            "start_date": "2027-01-04",
            "end_date": "2027-01-31",
            "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
        }
    }
    world.post_availability(provider, week)
    held = world.appointment("reserve", people["patient"], {"provider_id": provider["id"], "start_time": HELD})
    people["appointment"] = held["id"]
    return people


CELLS = [(row, role) for row in MATRIX for role in ROLES]


@pytest.mark.parametrize(
    ("row", "role"),
    CELLS,
    ids=[f"{m} {p} {(b or {}).get('start_time', '')} as {r}".replace("  ", " ") for (_, m, p, b, _), r in CELLS],
)
def test_every_endpoint_for_every_caller(
    world: World, cast: dict, row: tuple[str, str, str, dict | None, dict[str, int]], role: str
) -> None:
    function, method, path, body, expected = row
    client = getattr(world, function)
    names = {"P": cast["provider"]["id"], "A": cast["appointment"], "victim": cast["other_patient"]["email"]}
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
