"""Schedule use cases: availability rules, free slots, a provider's bookings, the
provider list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from reservations.adapters.db import User
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user
from reservations.domain.availability import Availability
from reservations.domain.booking import appointment_view
from reservations.domain.errors import Forbidden
from reservations.domain.scheduling import PostedAvailability, ProviderSchedule, SlotListing
from reservations.usecases import Resources


@dataclass(frozen=True)
class AvailabilityUpdate:
    touched_days: int
    slots: int
    conflicts: list[dict[str, Any]]


@dataclass(frozen=True)
class StoredAvailability:
    provider: User
    availability: Availability


class ScheduleUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def _schedule(self, session: Any, *, cached: bool = False) -> ProviderSchedule:
        r = self._resources
        return ProviderSchedule(session, policy=r.booking_policy, now=r.now(), store=r.day_store if cached else None)

    def list_providers(self, caller: AccessClaims, *, limit: int, offset: int) -> Sequence[User]:
        with self._resources.unit_of_work() as session:
            if current_user(session, caller).role != "admin":
                raise Forbidden("this action requires the role admin", code="wrong_role")
            return self._schedule(session).list_providers(limit=limit, offset=offset)

    def post_availability(
        self, caller: AccessClaims, provider_id: int, posted: PostedAvailability
    ) -> AvailabilityUpdate:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            result = schedule.post_availability(current_user(session, caller), provider_id, posted)
            conflicts = [appointment_view(a, schedule.now) for a in result.conflicts]
        return AvailabilityUpdate(len(result.touched), result.slots, conflicts)

    def stored_availability(self, caller: AccessClaims, provider_id: int) -> StoredAvailability:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            provider = schedule.require_owner_or_admin(current_user(session, caller), provider_id)
            return StoredAvailability(provider, schedule.load_availability(provider_id))

    def free_slots(self, caller: AccessClaims, provider_id: int, first: date | None, last: date | None) -> SlotListing:
        with self._resources.unit_of_work() as session:
            current_user(session, caller)
            return self._schedule(session, cached=True).free_slots(provider_id, first, last)

    def booked_appointments(
        self, caller: AccessClaims, provider_id: int, first: date | None, last: date | None
    ) -> list[tuple[dict[str, Any], str]]:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            rows = schedule.booked_appointments(current_user(session, caller), provider_id, first, last)
            return [(appointment_view(a, schedule.now), name) for a, name in rows]
