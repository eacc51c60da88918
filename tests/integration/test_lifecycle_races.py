"""Reschedules under real concurrency, through the real handlers: a move racing a
reservation for the target slot, two moves of one appointment, and a move racing the
hold's expiry (by the scheduled pass or by a reservation's lazy expiry)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from reservations.adapters.db import Appointment
from reservations.composition import Container
from reservations.config import Settings
from tests.builders import NOW, Clock, Person, confirm, container_at_now, create_user, hold
from tests.handlers.test_cache_handlers import invoke as run_scheduled_pass
from tests.integration.test_concurrency import appointments_on, open_every_day, run_together
from tests.support import FunctionClient, load_function
from tests.world import SyncWorld, container_of, follow

ROUNDS = 20
FIRST_DAY = datetime(2027, 1, 6, tzinfo=UTC)  # a Wednesday, past the 24 h notice


@pytest.fixture
def setup(settings: Settings) -> Iterator[Container]:
    with container_at_now(settings, max_active_holds=1000) as container:
        yield container


def at(round_number: int, hour: int) -> datetime:
    """The round's own day (weekdays and weekends alike are open), at `hour` UTC."""
    return FIRST_DAY + timedelta(days=round_number, hours=hour)


def move_call(client: FunctionClient, actor: Person, appointment_id: int, start: datetime) -> Any:
    body = {"slot_id": appointment_id, "start_time": start.isoformat()}
    return lambda: client.post("/appointments/reschedule", json_body=body, token=actor.token)


def reserve_call(client: FunctionClient, patient: Person, provider: Person, start: datetime) -> Any:
    body = {"provider_id": provider.id, "start_time": start.isoformat()}
    return lambda: client.post("/appointments/reserve", json_body=body, token=patient.token)


def row(container: Container, appointment_id: int) -> Appointment:
    with container.unit_of_work() as session:
        return session.get_one(Appointment, appointment_id)


def successors(container: Container, appointment_id: int) -> list[Appointment]:
    with container.unit_of_work() as session:
        return list(session.scalars(select(Appointment).where(Appointment.rescheduled_from == appointment_id)))


def active_at(container: Container, provider: Person, start: datetime) -> int:
    with container.unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Appointment.provider_id == provider.id,
                    Appointment.start_time == start,
                    Appointment.status.in_(("reserved", "confirmed")),
                )
            )
            or 0
        )


def free_starts(providers: FunctionClient, provider: Person, viewer: Person, day: datetime) -> set[str]:
    query = {"start_date": day.date().isoformat(), "end_date": day.date().isoformat()}
    response = providers.get(f"/providers/{provider.id}/time-slots", token=viewer.token, query=query)
    assert response.status == 200, response.body
    return {slot["start_time"] for slot in response.body}


def iso(start: datetime) -> str:
    return start.isoformat().replace("+00:00", "Z")


@pytest.mark.slow
def test_a_move_racing_a_reservation_for_the_target_has_one_winner_and_frees_the_old_slot_only_if_it_won(
    setup: Container,
) -> None:
    provider = create_user(setup, "provider")
    open_every_day(setup, provider)
    mover, rival = create_user(setup, "patient"), create_user(setup, "patient")
    appointments = appointments_on(setup, db_pool_size=4)
    providers = FunctionClient(load_function("providers"))
    follow(container_of(providers), setup)
    wins: Counter[str] = Counter()
    try:
        for round_number in range(ROUNDS):
            # Given the mover's confirmed 9:00 and the listing cached while it stands
            old_start, target = at(round_number, 9), at(round_number, 10)
            old = hold(setup, mover, provider, old_start)
            confirm(setup, mover, old)
            assert iso(old_start) not in free_starts(providers, provider, rival, old_start)

            # When the mover moves to 10:00 while the rival reserves 10:00
            moved, reserved = run_together(
                [move_call(appointments, mover, old, target), reserve_call(appointments, rival, provider, target)]
            )

            # Then exactly one gets 10:00; the 9:00 is free if and only if the move won
            outcome = Counter((r.status, r.body.get("code")) for r in (moved, reserved))
            one_winner = (
                {(200, None): 1, (409, "slot_unavailable"): 1},
                {(201, None): 1, (409, "slot_unavailable"): 1},
            )
            assert outcome in one_winner, (round_number, outcome)
            move_won = moved.status == 200
            wins["move" if move_won else "reserve"] += 1
            assert active_at(setup, provider, target) == 1
            assert active_at(setup, provider, old_start) == (0 if move_won else 1), round_number
            assert row(setup, old).status == ("rescheduled" if move_won else "confirmed")
            assert len(successors(setup, old)) == (1 if move_won else 0)
            listed = free_starts(providers, provider, rival, old_start)
            assert (iso(old_start) in listed) == move_won, round_number
            assert iso(target) not in listed
    finally:
        appointments.close()
        providers.close()
    assert sum(wins.values()) == ROUNDS


@pytest.mark.slow
def test_two_moves_of_one_appointment_at_once_make_one_new_appointment(setup: Container) -> None:
    provider = create_user(setup, "provider")
    open_every_day(setup, provider)
    patient = create_user(setup, "patient")
    clients = [appointments_on(setup) for _ in range(2)]
    try:
        for round_number in range(ROUNDS):
            old = hold(setup, patient, provider, at(round_number, 9))
            # The patient and the provider move it to different times, from two containers
            responses = run_together(
                [
                    move_call(clients[0], patient, old, at(round_number, 10)),
                    move_call(clients[1], provider, old, at(round_number, 11)),
                ]
            )
            outcome = Counter((r.status, r.body.get("code")) for r in responses)
            assert outcome == {(200, None): 1, (409, "not_reschedulable"): 1}, (round_number, outcome)
            (winner,) = [r.body for r in responses if r.status == 200]
            (successor,) = successors(setup, old)
            assert successor.id == winner["id"] == row(setup, old).rescheduled_to
            assert sum(active_at(setup, provider, at(round_number, hour)) for hour in (9, 10, 11)) == 1
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
@pytest.mark.parametrize("expirer", ["scheduled pass", "lazy expiry"])
def test_a_move_racing_the_holds_expiry_never_moves_an_expired_hold(sync_world: SyncWorld, expirer: str) -> None:
    """The mover's container says the hold is live (a microsecond before its deadline);
    the expirer's says it has expired (the scheduled pass, or a rival reserving the held
    slot, whose reservation expires it lazily)."""
    provider = sync_world.provider_with_week()
    holder, rival = create_user(sync_world.container, "patient"), create_user(sync_world.container, "patient")
    mover_clock, expirer_clock = Clock(NOW), Clock(NOW)
    mover = sync_world.client("appointments")
    container_of(mover).clock = mover_clock
    if expirer == "scheduled pass":
        scheduled = sync_world.function("cache_sync")
        scheduled.container.clock = expirer_clock
    else:
        reserving = sync_world.client("appointments")
        container_of(reserving).clock = expirer_clock
    weekdays = [FIRST_DAY + timedelta(days=d) for d in range(10) if (FIRST_DAY + timedelta(days=d)).weekday() < 5]
    outcomes: Counter[str] = Counter()
    for trial in range(ROUNDS):
        day = weekdays[trial // 4]
        old_start, target = (
            day + timedelta(hours=8, minutes=30 * (trial % 4)),
            day + timedelta(hours=12, minutes=30 * (trial % 4)),
        )
        sync_world.clock.current = NOW + timedelta(seconds=trial)
        old = hold(sync_world.container, holder, provider, old_start)
        deadline = row(sync_world.container, old).expires_at
        assert deadline is not None
        mover_clock.current, expirer_clock.current = deadline - timedelta(microseconds=1), deadline

        if expirer == "scheduled pass":
            moved, _ = run_together([move_call(mover, holder, old, target), lambda: run_scheduled_pass(scheduled)])
        else:
            moved, reserved = run_together(
                [move_call(mover, holder, old, target), reserve_call(reserving, rival, provider, old_start)]
            )
            assert reserved.status == 201, reserved.body  # the held slot is free either way

        status = row(sync_world.container, old).status
        after = successors(sync_world.container, old)
        # Never both: an expired hold has no successor; a successor means the hold moved
        if status == "expired":
            assert (after, moved.status, moved.body.get("code")) == ([], 409, "not_reschedulable"), trial
        else:
            assert (status, moved.status, [s.id for s in after]) == ("rescheduled", 200, [moved.body["id"]]), trial
            assert after[0].expires_at == deadline
        outcomes[status] += 1
    assert sum(outcomes.values()) == ROUNDS
