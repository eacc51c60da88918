"""The provider directory, availability search across providers and next-available,
through the real providers handler; and the 422s of the new endpoints' input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from reservations.domain import providers
from tests.world import WEEKDAYS_8_TO_4, World, add_visit_type, named_provider, patch_profile

TWO_DAYS = {"start_date": "2027-01-06", "end_date": "2027-01-07"}


def word() -> str:
    """A word no other test uses, letters only (so the search parser keeps it one word)."""
    return uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop"))


def page(world: World, viewer: dict, **query: Any) -> Any:
    return world.providers.get(
        "/directory/providers", token=viewer["token"], query={k: str(v) for k, v in query.items()}
    )


def all_pages(world: World, viewer: dict, **query: Any) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        response = page(world, viewer, **query, **({"cursor": cursor} if cursor else {}))
        assert response.status == 200, response.body
        items.extend(response.body["items"])
        cursor = response.body["next_cursor"]
        if cursor is None:
            return items


def found(world: World, viewer: dict, **query: Any) -> set[int]:
    return {item["id"] for item in all_pages(world, viewer, limit=100, **query)}


def search(world: World, viewer: dict, **query: Any) -> list[dict]:
    response = world.providers.get("/availability", token=viewer["token"], query={k: str(v) for k, v in query.items()})
    assert response.status == 200, response.body
    result: list[dict] = response.body
    return result


def listing(world: World, provider: dict, viewer: dict, visit_type_id: int | None = None) -> list[dict]:
    """The provider's own listing of the two days, as search items."""
    query = {**TWO_DAYS, **({"visit_type_id": str(visit_type_id)} if visit_type_id else {})}
    response = world.slots(provider, viewer, query)
    assert response.status == 200, response.body
    return [
        {key: slot[key] for key in ("provider_id", "visit_type_id", "start_time", "end_time")} for slot in response.body
    ]


def merged(*listings: list[dict]) -> list[dict]:
    return sorted((slot for one in listings for slot in one), key=lambda s: (s["start_time"], s["provider_id"]))


# --- the directory ---------------------------------------------------------------------------------


def test_pages_cover_every_provider_once_while_providers_are_added(world: World) -> None:
    tag, patient = word(), world.user("patient")
    created = [named_provider(world, f"Dr {tag} {n}")["id"] for n in range(5)]
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        response = page(world, patient, q=tag, limit=2, **({"cursor": cursor} if cursor else {}))
        assert response.status == 200, response.body
        assert len(response.body["items"]) <= 2
        seen.extend(item["id"] for item in response.body["items"])
        cursor = response.body["next_cursor"]
        if cursor is None:
            break
        # Providers join between pages: they come later, none twice, none skipped.
        if len(created) < 9:
            created.append(named_provider(world, f"Dr {tag} late")["id"])
    assert seen == sorted(created)  # in id order, each once
    assert len(created) == 8  # three joined between pages


def test_q_matches_the_start_of_any_word_of_the_name_or_specialty(world: World) -> None:
    tag, patient = word(), world.user("patient")
    ada = named_provider(world, "Dr Ada Derm", specialty=f"Skin {tag}")
    bob = named_provider(world, "Bob Smith", specialty=f"Cardiology {tag}")
    ours = {ada["id"], bob["id"]}
    for q, expected in [
        ("dr", {ada["id"]}),
        ("DERM", {ada["id"]}),
        ("ada", {ada["id"]}),
        ("Skin", {ada["id"]}),
        ("cardio", {bob["id"]}),
        ("smi", {bob["id"]}),
        (tag[:8], ours),
        (tag.upper(), ours),
        ("erm", set()),  # the middle of a word
        ("mith", set()),
    ]:
        assert found(world, patient, q=q) & ours == expected, q
    assert found(world, patient, q="???") == set()  # no word at all


def test_a_prefix_with_few_matches_and_one_with_many_page_alike(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Few matches are sorted from the full-text index, many walk the primary key in order.
    tag, patient = word(), world.user("patient")
    # The third is a cardiologist: a page that dropped the specialty would show it.
    made = [named_provider(world, f"Dr {tag} {n}", specialty="Cardiology" if n == 2 else "Skin") for n in range(6)]
    skin = [provider["id"] for n, provider in enumerate(made) if n != 2]
    query = {"q": tag, "specialty": "skin", "limit": 2}
    few = [item["id"] for item in all_pages(world, patient, **query)]
    monkeypatch.setattr(providers, "SPARSE_MATCHES", 1)  # every prefix is a dense one now
    many = [item["id"] for item in all_pages(world, patient, **query)]
    assert few == many == skin


def test_specialty_matches_the_whole_specialty_in_any_case(world: World) -> None:
    tag, patient = word(), world.user("patient")
    ada = named_provider(world, "Dr Ada", specialty=f"Skin {tag}")
    named_provider(world, "Dr Other", specialty=f"Skin {tag} and more")
    assert found(world, patient, specialty=f"SKIN {tag.upper()}") == {ada["id"]}
    assert found(world, patient, specialty="Skin") & {ada["id"]} == set()
    assert found(world, patient, q="ada", specialty=f"skin {tag}") == {ada["id"]}


def test_directory_items_show_types_and_no_emails(world: World) -> None:
    tag, patient = word(), world.user("patient")
    provider = named_provider(world, f"Dr {tag}", specialty="Dermatology", timezone="Europe/London")
    hour = add_visit_type(world, provider, "Hour", 60, buffer_after_minutes=10)
    response = page(world, patient, q=tag)
    assert response.status == 200, response.body
    items = response.body["items"]
    standard = world.providers.get(f"/providers/{provider['id']}/visit-types", token=patient["token"]).body[0]
    assert items == [
        {
            "id": provider["id"],
            "name": f"Dr {tag}",
            "specialty": "Dermatology",
            "timezone": "Europe/London",
            "visit_types": [
                {"id": standard["id"], "name": "Standard visit", "duration_minutes": 15},
                {"id": hour["id"], "name": "Hour", "duration_minutes": 60},
            ],
        }
    ]
    assert response.body["next_cursor"] is None
    assert provider["email"] not in json.dumps(response.body)
    everyone = page(world, patient, limit=100)
    assert everyone.status == 200 and "@" not in json.dumps(everyone.body)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "99999999999999999999"])
def test_a_cursor_this_api_did_not_return_is_422(world: World, cursor: str) -> None:
    response = page(world, world.user("patient"), cursor=cursor)
    assert (response.status, response.body.get("code")) == (422, "invalid_cursor"), response.body


# --- availability search ------------------------------------------------------------------------------


@pytest.fixture
def three_providers(world: World) -> dict[str, Any]:
    """Three providers of one specialty: two in UTC (one with a booking), one in New York;
    A and C also offer a 60-minute visit, B a 30-minute one."""
    specialty, patient = f"Search {word()}", world.user("patient")
    people = [
        named_provider(world, f"Dr {n}", specialty=specialty, timezone=tz)
        for n, tz in (("A", "UTC"), ("B", "UTC"), ("C", "America/New_York"))
    ]
    for provider in people:
        world.post_availability(provider, WEEKDAYS_8_TO_4)
    a, b, c = people
    hours = {
        "a": add_visit_type(world, a, "Hour", 60),
        "c": add_visit_type(world, c, "Long", 60, buffer_before_minutes=15),
    }
    add_visit_type(world, b, "Half", 30)
    world.appointment("reserve", patient, {"provider_id": b["id"], "start_time": "2027-01-06T10:00:00Z"})
    return {"specialty": specialty, "patient": patient, "a": a, "b": b, "c": c, "hours": hours}


def test_search_equals_the_providers_listings_merged(world: World, three_providers: dict[str, Any]) -> None:
    p = three_providers
    a, b, c, patient = p["a"], p["b"], p["c"], p["patient"]
    every = merged(listing(world, a, patient), listing(world, b, patient), listing(world, c, patient))
    assert len(every) > 100
    assert search(world, patient, specialty=p["specialty"].upper(), limit=500, **TWO_DAYS) == every
    assert search(world, patient, specialty=p["specialty"], **TWO_DAYS) == every[:100]  # limit defaults to 100
    assert search(world, patient, specialty=p["specialty"], limit=7, **TWO_DAYS) == every[:7]
    # By ids: unknown ids and non-providers are skipped.
    ids = f"{c['id']},{patient['id']},{2**62},{a['id']}"
    assert search(world, patient, provider_ids=ids, limit=500, **TWO_DAYS) == merged(
        listing(world, a, patient), listing(world, c, patient)
    )
    # A duration: only the types of that duration, of providers that have one.
    hours = p["hours"]
    assert search(world, patient, specialty=p["specialty"], duration_minutes=60, limit=500, **TWO_DAYS) == merged(
        listing(world, a, patient, hours["a"]["id"]), listing(world, c, patient, hours["c"]["id"])
    )
    assert search(world, patient, specialty=p["specialty"], duration_minutes=45, **TWO_DAYS) == []
    assert search(world, patient, specialty=f"No such {word()}", **TWO_DAYS) == []


def test_search_sees_a_booking_at_once(world: World, three_providers: dict[str, Any]) -> None:
    p = three_providers
    a, patient = p["a"], p["patient"]
    query = {"provider_ids": str(a["id"]), "limit": 500, **TWO_DAYS}
    assert "2027-01-06T09:00:00Z" in [slot["start_time"] for slot in search(world, patient, **query)]
    other = world.user("patient")
    world.appointment("reserve", other, {"provider_id": a["id"], "start_time": "2027-01-06T09:00:00Z"})
    after = search(world, patient, **query)
    assert "2027-01-06T09:00:00Z" not in [slot["start_time"] for slot in after]
    assert after == listing(world, a, patient)


def test_next_available_is_the_first_slot_of_the_listing(world: World, three_providers: dict[str, Any]) -> None:
    p = three_providers
    a, c, patient = p["a"], p["c"], p["patient"]
    for provider, type_id in ((a, None), (a, p["hours"]["a"]["id"]), (c, p["hours"]["c"]["id"])):
        query = {"visit_type_id": str(type_id)} if type_id else {}
        response = world.providers.get(
            f"/providers/{provider['id']}/next-available", token=patient["token"], query=query
        )
        assert response.status == 200, response.body
        first = world.slots(provider, patient, query).body[0]  # today .. today + 6
        assert response.body == {key: first[key] for key in ("provider_id", "visit_type_id", "start_time", "end_time")}
    # Now Tuesday 12:00 (after 24 h notice); once it is taken, 12:15.
    taken = world.providers.get(f"/providers/{a['id']}/next-available", token=patient["token"]).body
    assert taken["start_time"] == "2027-01-05T12:00:00Z"
    world.appointment("reserve", world.user("patient"), {"provider_id": a["id"], "start_time": taken["start_time"]})
    moved = world.providers.get(f"/providers/{a['id']}/next-available", token=patient["token"]).body
    assert moved["start_time"] == "2027-01-05T12:15:00Z"


def test_next_available_is_404_when_nothing_is_bookable_within_the_horizon(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    response = world.providers.get(f"/providers/{provider['id']}/next-available", token=patient["token"])
    assert (response.status, response.body.get("code")) == (404, "no_availability")
    # With hours, a slot within a day's horizon; then a notice longer than the horizon.
    world.post_availability(provider, WEEKDAYS_8_TO_4)
    patch_profile(world, provider, provider, rules={"horizon_days": 1, "min_notice_hours": 0})
    assert world.providers.get(f"/providers/{provider['id']}/next-available", token=patient["token"]).status == 200
    patch_profile(world, provider, provider, rules={"horizon_days": 1, "min_notice_hours": 25})
    response = world.providers.get(f"/providers/{provider['id']}/next-available", token=patient["token"])
    assert (response.status, response.body.get("code")) == (404, "no_availability")
    unknown = world.providers.get(f"/providers/{patient['id']}/next-available", token=patient["token"])
    assert (unknown.status, unknown.body.get("code")) == (404, "provider_not_found")


# --- invalid input ------------------------------------------------------------------------------------

FIFTY_ONE = ",".join(str(n) for n in range(1, 52))


@pytest.mark.parametrize(
    "query",
    [
        {"provider_ids": "0", **TWO_DAYS},
        {"provider_ids": str(2**63), **TWO_DAYS},
        {"provider_ids": "1,,2", **TWO_DAYS},
        {"provider_ids": FIFTY_ONE, **TWO_DAYS},
        {"provider_ids": "1", "start_date": "2027-01-06", "end_date": "2027-01-20"},  # 15 days
        {"provider_ids": "1", "start_date": "2027-01-07", "end_date": "2027-01-06"},
        {"provider_ids": "1", **TWO_DAYS, "duration_minutes": "20"},
        {"provider_ids": "1", **TWO_DAYS, "duration_minutes": "0"},
        {"provider_ids": "1", **TWO_DAYS, "duration_minutes": "495"},
        {"provider_ids": "1", **TWO_DAYS, "limit": "0"},
        {"provider_ids": "1", **TWO_DAYS, "limit": "501"},
        {"provider_ids": "1"},  # no dates
        TWO_DAYS,  # neither provider_ids nor specialty
        {"provider_ids": "1", "specialty": "Skin", **TWO_DAYS},  # both
    ],
)
def test_bad_availability_searches_are_422(world: World, query: dict[str, str]) -> None:
    response = world.providers.get("/availability", token=world.user("patient")["token"], query=query)
    assert response.status == 422, response.body


def test_fifty_provider_ids_are_accepted(world: World) -> None:
    ids = ",".join(str(n) for n in range(1, 51))
    response = world.providers.get(
        "/availability", token=world.user("patient")["token"], query={"provider_ids": ids, **TWO_DAYS}
    )
    assert response.status == 200, response.body


@pytest.mark.parametrize(
    "body",
    [
        {"name": "X", "duration_minutes": 20},
        {"name": "X", "duration_minutes": 0},
        {"name": "X", "duration_minutes": 495},
        {"name": "X", "duration_minutes": 30, "buffer_before_minutes": -5},
        {"name": "X", "duration_minutes": 30, "buffer_after_minutes": 245},
        {"name": "X", "duration_minutes": 30, "buffer_after_minutes": 7},
        {"name": "", "duration_minutes": 30},
        {"name": "X" * 81, "duration_minutes": 30},
        {"name": "X", "duration_minutes": 30, "description": "d" * 501},
        {"duration_minutes": 30},
    ],
)
def test_bad_visit_types_are_422(world: World, body: dict[str, Any]) -> None:
    provider = world.user("provider")
    response = world.providers.post(f"/providers/{provider['id']}/visit-types", json_body=body, token=provider["token"])
    assert response.status == 422, response.body


@pytest.mark.parametrize(
    "body",
    [
        {"duration_minutes": 20},
        {"duration_minutes": 495},
        {"buffer_before_minutes": -5},
        {"buffer_after_minutes": 241},
        {"buffer_before_minutes": 7},
        {"name": ""},
        {"name": None},
        {"duration_minutes": None},
        {"active": False},
    ],
)
def test_bad_visit_type_changes_are_422_and_change_nothing(world: World, body: dict[str, Any]) -> None:
    provider = world.user("provider")
    visit = add_visit_type(world, provider, "Y", 30, buffer_after_minutes=5)
    response = world.providers.patch(f"/visit-types/{visit['id']}", json_body=body, token=provider["token"])
    assert response.status == 422, response.body
    assert world.providers.get(f"/providers/{provider['id']}/visit-types", token=provider["token"]).body[1] == visit


@pytest.mark.parametrize(
    "rules",
    [
        {"min_notice_hours": -1},
        {"min_notice_hours": 721},
        {"horizon_days": 0},
        {"horizon_days": 731},
        {"cancellation_notice_hours": 721},
        {"max_appointments_per_day": 0},
        {"max_appointments_per_day": 201},
        {"max_per_day": 3},
    ],
)
def test_rules_out_of_range_are_422_and_change_nothing(world: World, rules: dict[str, Any]) -> None:
    provider = world.user("provider")
    before = world.providers.get(f"/providers/{provider['id']}", token=provider["token"]).body
    response = world.providers.patch(
        f"/providers/{provider['id']}", json_body={"rules": rules}, token=provider["token"]
    )
    assert response.status == 422, response.body
    assert world.providers.get(f"/providers/{provider['id']}", token=provider["token"]).body == before


@pytest.mark.parametrize(
    "body", [{"specialty": "S" * 81}, {"bio": "b" * 2001}, {"name": None}, {"rules": None}, {"timezone": "Mars/Base"}]
)
def test_bad_profiles_are_422(world: World, body: dict[str, Any]) -> None:
    provider = world.user("provider")
    response = world.providers.patch(f"/providers/{provider['id']}", json_body=body, token=provider["token"])
    assert response.status == 422, response.body


@pytest.mark.parametrize("visit_type_id", ["0", str(2**63), "x"])
def test_a_bad_visit_type_id_in_a_listing_is_422(world: World, visit_type_id: str) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    response = world.slots(provider, patient, {**TWO_DAYS, "visit_type_id": visit_type_id})
    assert response.status == 422, response.body
