"""Schedule use cases: availability rules, free slots, a provider's bookings, the
provider list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from reservations.adapters.db import User, VisitType
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user
from reservations.domain.audit import audit_by_user
from reservations.domain.availability import Availability
from reservations.domain.booking import appointment_view
from reservations.domain.errors import Forbidden, NotFound, Unprocessable
from reservations.domain.events import AVAILABILITY_UPDATED, availability_data, record_event
from reservations.domain.policy import ProviderRules, rules_for
from reservations.domain.providers import DirectoryPage, ProviderDirectory
from reservations.domain.scheduling import (
    EARLIEST_DATE,
    LATEST_DATE,
    OfferedSlot,
    PostedAvailability,
    ProviderSchedule,
    SlotListing,
)
from reservations.domain.statistics import ProviderStats, provider_stats
from reservations.usecases import Resources


@dataclass(frozen=True)
class AvailabilityUpdate:
    touched_days: int
    slots: int
    conflicts: list[dict[str, Any]]


MAX_SEARCH_DAYS = 14
MAX_SEARCH_PROVIDERS = 50


@dataclass(frozen=True)
class ProviderProfile:
    provider: User
    rules: ProviderRules
    visit_types: list[VisitType]
    shows_email: bool


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
            actor = session.get_one(User, caller.user_id)
            self._audit(
                session, actor, "availability.posted", "availability", provider_id, days_changed=len(result.touched)
            )
            if result.touched:
                provider = session.get_one(User, provider_id)
                record_event(
                    session,
                    AVAILABILITY_UPDATED,
                    schedule.now,
                    availability_data(provider_id, provider.timezone, result.touched, result.slots),
                    provider_id=provider_id,
                )
        self._resources.publish_after_commit()
        return AvailabilityUpdate(len(result.touched), result.slots, conflicts)

    def stored_availability(self, caller: AccessClaims, provider_id: int) -> StoredAvailability:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            provider = schedule.require_owner_or_admin(current_user(session, caller), provider_id)
            return StoredAvailability(provider, schedule.load_availability(provider_id))

    def free_slots(
        self,
        caller: AccessClaims,
        provider_id: int,
        first: date | None,
        last: date | None,
        visit_type_id: int | None = None,
    ) -> SlotListing:
        with self._resources.read_only() as session:
            listing = self._schedule(session, cached=True).free_slots(
                provider_id, first, last, visit_type_id, caller=caller
            )
        if listing.cache_outcome == "hit":
            self._resources.count("CacheHits")
        elif listing.cache_outcome == "miss":
            self._resources.count("CacheMisses")
        else:
            self._resources.count("CachePartials")
        return listing

    def search_availability(
        self,
        caller: AccessClaims,
        *,
        provider_ids: Sequence[int] | None,
        specialty: str | None,
        first: date,
        last: date,
        duration_minutes: int | None,
        limit: int,
    ) -> list[OfferedSlot]:
        check_search_range(first, last)
        with self._resources.read_only() as session:  # reads only: no BEGIN/COMMIT round trips
            current_user(session, caller)
            directory = ProviderDirectory(session)
            if provider_ids is not None:
                providers = directory.with_ids(provider_ids)
            else:
                providers = directory.with_specialty(specialty or "", MAX_SEARCH_PROVIDERS)
            return self._schedule(session, cached=True).search_availability(
                providers, first, last, duration_minutes=duration_minutes, limit=limit
            )

    def next_available(self, caller: AccessClaims, provider_id: int, visit_type_id: int | None) -> OfferedSlot:
        with self._resources.read_only() as session:  # reads only: no BEGIN/COMMIT round trips
            current_user(session, caller)
            found = self._schedule(session, cached=True).next_available(provider_id, visit_type_id)
        if found is None:
            raise NotFound("no bookable slot within the provider's horizon", code="no_availability")
        return found

    # --- profiles, rules, visit types, directory ---------------------------------------

    def profile(self, caller: AccessClaims, provider_id: int) -> ProviderProfile:
        with self._resources.unit_of_work() as session:
            viewer = current_user(session, caller)
            directory = ProviderDirectory(session)
            provider = directory.provider(provider_id)
            return self._profile(directory, viewer, provider)

    def update_profile(self, caller: AccessClaims, provider_id: int, changes: Mapping[str, Any]) -> ProviderProfile:
        with self._resources.unit_of_work() as session:
            viewer = current_user(session, caller)
            directory = ProviderDirectory(session)
            provider = directory.update_profile(viewer, provider_id, changes)
            rules = sorted((changes.get("rules") or {}).keys()) if isinstance(changes.get("rules"), Mapping) else []
            self._audit(
                session,
                viewer,
                "provider.rules_changed" if rules else "provider.profile_changed",
                "provider",
                provider.id,
                fields=sorted(changes),
                rules=rules,
            )
            return self._profile(directory, viewer, provider)

    def _profile(self, directory: ProviderDirectory, viewer: User, provider: User) -> ProviderProfile:
        return ProviderProfile(
            provider=provider,
            rules=rules_for(provider, self._resources.booking_policy),
            visit_types=directory.visit_types([provider.id])[provider.id],
            shows_email=viewer.role == "admin" or viewer.id == provider.id,
        )

    def visit_types(self, caller: AccessClaims, provider_id: int) -> list[VisitType]:
        with self._resources.unit_of_work() as session:
            current_user(session, caller)
            directory = ProviderDirectory(session)
            directory.provider(provider_id)
            return directory.visit_types([provider_id])[provider_id]

    def add_visit_type(self, caller: AccessClaims, provider_id: int, fields: Mapping[str, Any]) -> VisitType:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            added = ProviderDirectory(session).add_visit_type(actor, provider_id, fields)
            self._audit(session, actor, "visit_type.created", "visit_type", added.id, provider_id=provider_id)
            return added

    def update_visit_type(self, caller: AccessClaims, visit_type_id: int, changes: Mapping[str, Any]) -> VisitType:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            changed = ProviderDirectory(session).update_visit_type(actor, visit_type_id, changes)
            self._audit(session, actor, "visit_type.changed", "visit_type", visit_type_id, fields=sorted(changes))
            return changed

    def remove_visit_type(self, caller: AccessClaims, visit_type_id: int) -> None:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            ProviderDirectory(session).deactivate_visit_type(actor, visit_type_id)
            self._audit(session, actor, "visit_type.removed", "visit_type", visit_type_id)

    def _audit(self, session: Any, actor: User, action: str, target_type: str, target_id: int, **details: Any) -> None:
        audit_by_user(
            session,
            actor,
            at=self._resources.now(),
            action=action,
            target_type=target_type,
            target_id=target_id,
            **details,
        )

    def directory(
        self, caller: AccessClaims, *, q: str | None, specialty: str | None, limit: int, cursor: str | None
    ) -> DirectoryPage:
        with self._resources.unit_of_work() as session:
            current_user(session, caller)
            return ProviderDirectory(session).search(q=q, specialty=specialty, limit=limit, cursor=cursor)

    def booked_appointments(
        self, caller: AccessClaims, provider_id: int, first: date | None, last: date | None
    ) -> list[tuple[dict[str, Any], str]]:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            rows = schedule.booked_appointments(current_user(session, caller), provider_id, first, last)
            return [(appointment_view(a, schedule.now), name) for a, name in rows]

    def provider_stats(self, caller: AccessClaims, provider_id: int, first: date, last: date) -> ProviderStats:
        with self._resources.unit_of_work() as session:
            schedule = self._schedule(session)
            return provider_stats(schedule, current_user(session, caller), provider_id, first, last)


def check_search_range(first: date, last: date) -> None:
    for value in (first, last):
        if not EARLIEST_DATE <= value <= LATEST_DATE:
            raise Unprocessable(f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}", code="invalid_date_range")
    if last < first:
        raise Unprocessable("end_date must not be before start_date", code="invalid_date_range")
    if (last - first).days + 1 > MAX_SEARCH_DAYS:
        raise Unprocessable(f"a search spans at most {MAX_SEARCH_DAYS} days", code="invalid_date_range")
