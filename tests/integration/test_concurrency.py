"""Double booking is impossible under real concurrency: many containers, one slot."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reservations.adapters.db import User
from reservations.composition import Container
from reservations.config import Settings
from reservations.domain.errors import Conflict
from tests.builders import NOW, Clock, booking_for, create_user, open_weekdays
from tests.support import FunctionClient, load_function
from tests.world import container_of, follow

FIRST_SLOT = datetime(2027, 1, 6, 8, 0, tzinfo=UTC)


def open_every_day(container: Container, provider) -> None:  # type: ignore[no-untyped-def]
    """Monday to Sunday, 8am to 8pm UTC, for 31 days from NOW."""
    open_weekdays(container, provider, days="M-Su", end="8pm", span_days=31)


@pytest.fixture
def container_at_now(settings: Settings) -> Iterator[Container]:
    container = Container(settings.model_copy(update={"max_active_holds": 1000}), clock=Clock(NOW))
    yield container
    container.close()


def appointments_on(container: Container, **changes: Any) -> FunctionClient:
    """An appointments function container with the setup container's settings and clock."""
    client = FunctionClient(load_function("appointments"))
    follow(container_of(client), container, **changes)
    return client


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))

    def start(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(start, calls))


@pytest.mark.slow
def test_fifty_patients_one_slot_exactly_one_winner_over_twenty_rounds(container_at_now: Container) -> None:
    setup = container_at_now
    provider = create_user(setup, "provider")
    provider_id = provider.id
    open_every_day(setup, provider)
    patients = [create_user(setup, "patient") for _ in range(50)]
    # 25 connections for 50 racers: the race stays 25 transactions wide while a second suite
    # on the same Postgres (max_connections 100 by default) still finds connections.
    # pg8000's timeout bounds every socket read: a reservation queued behind 24 others on a
    # loaded machine may wait longer than the 5 s default for its turn.
    # Publishing after each commit (a second transaction per request) is proved elsewhere;
    # here it would only lengthen the queue for connections.
    client = appointments_on(setup, db_pool_size=25, db_connect_timeout_seconds=60, publish_after_commit=False)
    try:
        for round_number in range(20):
            start = (FIRST_SLOT + timedelta(minutes=15 * round_number)).isoformat()
            responses = run_together(
                [
                    lambda token=token, start=start: client.post(
                        "/appointments/reserve",
                        json_body={"provider_id": provider_id, "start_time": start},
                        token=token,
                    )
                    for token in (patient.token for patient in patients)
                ]
            )
            outcome = Counter((r.status, r.body.get("code")) for r in responses)
            assert outcome == {(201, None): 1, (409, "slot_unavailable"): 49}, (round_number, outcome)
    finally:
        client.close()


@pytest.mark.slow
def test_one_patient_racing_two_providers_gets_one_appointment(container_at_now: Container) -> None:
    setup = container_at_now
    people = [create_user(setup, "provider") for _ in range(2)]
    for provider in people:
        open_every_day(setup, provider)
    providers = [provider.id for provider in people]
    token = create_user(setup, "patient").token
    clients = [appointments_on(setup) for _ in range(2)]
    try:
        for round_number in range(20):
            start = (FIRST_SLOT + timedelta(minutes=15 * round_number)).isoformat()
            responses = run_together(
                [
                    lambda client=client, provider_id=provider_id, start=start: client.post(
                        "/appointments/reserve",
                        json_body={"provider_id": provider_id, "start_time": start},
                        token=token,
                    )
                    for client, provider_id in zip(clients, providers, strict=True)
                ]
            )
            outcome = Counter((r.status, r.body.get("code")) for r in responses)
            assert outcome == {(201, None): 1, (409, "overlapping_appointment"): 1}, (round_number, outcome)
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
def test_confirm_racing_a_reservation_at_the_expiry_instant_never_both_win(settings: Settings) -> None:
    """Two containers whose clocks straddle the deadline: the holder confirms (its clock
    says the hold is live) while another patient reserves (its clock says it expired)."""
    policy_settings = settings.model_copy(update={"max_active_holds": 1000, "confirmation_grace_period_minutes": 10})
    setup = Container(policy_settings, clock=Clock(NOW))
    provider = create_user(setup, "provider")
    provider_id = provider.id
    open_every_day(setup, provider)
    holder_id = create_user(setup, "patient").id
    rival_id = create_user(setup, "patient").id
    outcomes: Counter[str] = Counter()
    try:
        for trial in range(300):
            start = FIRST_SLOT + timedelta(days=trial // 48, minutes=15 * (trial % 48))
            hold_time = NOW + timedelta(seconds=trial)
            with setup.unit_of_work() as session:
                holder = session.get_one(User, holder_id)
                appointment = booking_for(setup, session, hold_time).reserve(holder, provider_id, start)
                deadline = appointment.expires_at
                appointment_id = appointment.id
            assert deadline is not None

            def confirm(
                at: datetime = deadline - timedelta(microseconds=1), appointment_id: int = appointment_id
            ) -> str:
                try:
                    with setup.unit_of_work() as session:
                        holder = session.get_one(User, holder_id)
                        booking_for(setup, session, at).confirm(holder, appointment_id)
                    return "confirmed"
                except Conflict as error:
                    return error.code

            def rival_reserve(at: datetime = deadline, start: datetime = start) -> str:
                try:
                    with setup.unit_of_work() as session:
                        rival = session.get_one(User, rival_id)
                        booking_for(setup, session, at).reserve(rival, provider_id, start)
                    return "reserved"
                except Conflict as error:
                    return error.code

            confirm_result, reserve_result = run_together([confirm, rival_reserve])
            assert not (confirm_result == "confirmed" and reserve_result == "reserved"), trial
            assert (confirm_result == "confirmed") != (reserve_result == "reserved"), (
                trial,
                confirm_result,
                reserve_result,
            )
            outcomes[f"{confirm_result}/{reserve_result}"] += 1
    finally:
        setup.close()
    # Both orders must actually have happened, or the race was not exercised
    # (about 5% of trials go each way here; missing one in 300 is ~1e-7 likely).
    assert set(outcomes) == {"confirmed/slot_unavailable", "reservation_expired/reserved"}, outcomes
