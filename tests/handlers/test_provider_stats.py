"""GET /providers/{id}/stats through the real providers handler: counts, rates, lead
time and the weekday/hour spread of one provider's week, and who may ask."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.builders import NOW, SLOT, cancel, confirm, create_admin, create_user, hold, open_weekdays
from tests.world import World, container_of

WEEK = {"start_date": "2027-01-04", "end_date": "2027-01-10"}


def test_a_providers_week_in_figures(world: World) -> None:
    container = container_of(world.appointments)
    provider = create_user(container, "provider")
    open_weekdays(container, provider)  # 8am-4pm UTC on weekdays: 5 x 32 starts this week
    patient = create_user(container, "patient")
    wednesday, thursday, friday = SLOT, SLOT + timedelta(days=1), SLOT + timedelta(days=2)

    kept = hold(container, patient, provider, wednesday)
    confirm(container, patient, kept)
    dropped = hold(container, patient, provider, wednesday + timedelta(hours=1))
    confirm(container, patient, dropped)
    cancel(container, patient, dropped)
    hold(container, patient, provider, thursday)  # left to expire
    missed = hold(container, patient, provider, thursday + timedelta(hours=5))
    confirm(container, patient, missed)
    seen = hold(container, patient, provider, friday)
    confirm(container, patient, seen)
    world.clock.current = friday + timedelta(hours=1)
    for appointment_id, attendance in ((missed, "no_show"), (seen, "completed")):
        container.booking.record_attendance(provider.claims(container), appointment_id, attendance)

    response = world.providers.get(f"/providers/{provider.id}/stats", token=provider.token, query=WEEK)
    assert response.status == 200, response.body
    stats = response.body
    assert stats["counts"] == {
        "reserved": 0,
        "confirmed": 1,
        "cancelled": 1,
        "expired": 1,
        "rescheduled": 0,
        "completed": 1,
        "no_show": 1,
    }
    assert (stats["booked_minutes"], stats["offered_minutes"]) == (45, 5 * 32 * 15)
    assert stats["utilisation"] == pytest.approx(45 / 2400, abs=1e-4)
    assert (stats["no_show_rate"], stats["cancellation_rate"]) == (0.5, 0.25)
    lead_hours = sorted(
        (start - NOW).total_seconds() / 3600 for start in (wednesday, thursday + timedelta(hours=5), friday)
    )
    assert stats["median_lead_time_hours"] == lead_hours[1]
    assert stats["by_weekday"] == {"3": 1, "4": 1, "5": 1}  # Wednesday to Friday
    assert stats["by_hour"] == {"9": 2, "14": 1}


def test_stats_are_for_the_provider_and_admins(world: World) -> None:
    container = container_of(world.providers)
    provider, other, patient = (create_user(container, role) for role in ("provider", "provider", "patient"))
    path = f"/providers/{provider.id}/stats"
    assert world.providers.get(path, token=create_admin(container).token, query=WEEK).status == 200
    assert world.providers.get(path, token=other.token, query=WEEK).body["code"] == "not_your_schedule"
    assert world.providers.get(path, token=patient.token, query=WEEK).body["code"] == "wrong_role"
    empty = world.providers.get(path, token=provider.token, query=WEEK).body
    assert (empty["utilisation"], empty["median_lead_time_hours"], empty["by_hour"]) == (None, None, {})


@pytest.mark.parametrize(
    "query",
    [
        {"start_date": "2027-01-01", "end_date": "2028-01-02"},  # 367 days
        {"start_date": "2027-01-10", "end_date": "2027-01-04"},
        {"start_date": "2027-01-04"},
    ],
)
def test_bad_ranges_are_422(world: World, query: dict[str, str]) -> None:
    provider = create_user(container_of(world.providers), "provider")
    response = world.providers.get(f"/providers/{provider.id}/stats", token=provider.token, query=query)
    assert response.status == 422
