"""Buffers and daily caps hold under real concurrency: patients racing through an
appointments function container for different slots whose buffers collide, and for the
last places of a capped day."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from reservations.adapters.db import Appointment
from reservations.composition import Container
from reservations.config import Settings
from tests.builders import NOW, Clock, Person, create_user
from tests.integration.test_concurrency import appointments_on, open_every_day, run_together
from tests.support import FunctionClient

FIRST_DAY = datetime(2027, 1, 6, tzinfo=UTC)  # a Wednesday, past the 24 h notice


@pytest.fixture
def setup(settings: Settings) -> Iterator[Container]:
    container = Container(settings.model_copy(update={"max_active_holds": 1000}), clock=Clock(NOW))
    yield container
    container.close()


@pytest.fixture
def appointments(setup: Container) -> Iterator[FunctionClient]:
    client = appointments_on(setup, db_pool_size=25)
    yield client
    client.close()


def open_provider(setup: Container) -> Person:
    provider = create_user(setup, "provider")
    open_every_day(setup, provider)  # 8am-8pm UTC, every day
    return provider


def reserve_call(
    client: FunctionClient, patient: Person, provider: Person, start: datetime, visit_type_id: int | None = None
) -> Callable[[], Any]:
    body: dict[str, Any] = {"provider_id": provider.id, "start_time": start.isoformat()}
    if visit_type_id is not None:
        body["visit_type_id"] = visit_type_id
    return lambda: client.post("/appointments/reserve", json_body=body, token=patient.token)


def active_on(setup: Container, provider: Person, first: datetime, last: datetime) -> int:
    """Active appointments of the provider starting in [first, last), as Postgres counts them."""
    with setup.unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Appointment.provider_id == provider.id,
                    Appointment.start_time >= first,
                    Appointment.start_time < last,
                    Appointment.status.in_(("reserved", "confirmed")),
                )
            )
            or 0
        )


@pytest.mark.slow
def test_different_slots_whose_buffers_collide_get_exactly_one_winner_every_round(
    setup: Container, appointments: FunctionClient
) -> None:
    # Given a 15-minute visit keeping 15 minutes free on either side: starts at 9:00,
    # 9:15 and 9:30 keep 8:45-9:30, 9:00-9:45 and 9:15-10:00 free, each pair overlapping
    provider = open_provider(setup)
    visit_type = setup.schedule.add_visit_type(
        provider.claims(setup),
        provider.id,
        {"name": "Buffered", "duration_minutes": 15, "buffer_before_minutes": 15, "buffer_after_minutes": 15},
    )
    patients = [create_user(setup, "patient") for _ in range(3)]
    for round_number in range(10):
        nine = datetime.combine(FIRST_DAY.date() + timedelta(days=round_number), time(9), UTC)
        starts = [nine + k * timedelta(minutes=15) for k in range(3)]
        # When three patients reserve the three different slots at once
        responses = run_together(
            [
                reserve_call(appointments, patient, provider, start, visit_type.id)
                for patient, start in zip(patients, starts, strict=True)
            ]
        )
        # Then exactly one gets it, the others are told the slot is unavailable
        outcome = Counter((r.status, r.body.get("code")) for r in responses)
        assert outcome == {(201, None): 1, (409, "slot_unavailable"): 2}, (round_number, outcome)
        assert active_on(setup, provider, nine - timedelta(hours=1), nine + timedelta(hours=2)) == 1


@pytest.mark.slow
def test_twenty_patients_racing_for_the_last_places_of_a_capped_day_get_exactly_the_cap(
    setup: Container, appointments: FunctionClient
) -> None:
    # Given a provider that takes at most 3 appointments a day
    cap = 3
    provider = open_provider(setup)
    setup.schedule.update_profile(provider.claims(setup), provider.id, {"rules": {"max_appointments_per_day": cap}})
    patients = [create_user(setup, "patient") for _ in range(20)]
    for round_number in range(3):
        day = FIRST_DAY + timedelta(days=round_number)
        # When 20 patients reserve 20 distinct slots of that day at once
        starts = [day + timedelta(hours=8, minutes=15 * index) for index in range(20)]
        responses = run_together(
            [
                reserve_call(appointments, patient, provider, start)
                for patient, start in zip(patients, starts, strict=True)
            ]
        )
        # Then the cap is reached exactly, and everyone else hears why
        outcome = Counter((r.status, r.body.get("code")) for r in responses)
        assert outcome == {(201, None): cap, (409, "daily_limit_reached"): 20 - cap}, (round_number, outcome)
        assert active_on(setup, provider, day, day + timedelta(days=1)) == cap
