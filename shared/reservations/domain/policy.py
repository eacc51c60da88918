"""Booking policy: the deployment's defaults, each provider's own rules, and the shape of
a visit (duration and buffers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from reservations.adapters.db import User, VisitType

SLOT = timedelta(minutes=15)
# The longest visit (480 min) with both buffers (240 min each): how far an appointment's
# kept-free range can reach, which bounds the index scans around a window.
MAX_VISIT = timedelta(minutes=480)
MAX_BUFFER = timedelta(minutes=240)
MAX_BUSY_SPAN = MAX_VISIT + 2 * MAX_BUFFER


@dataclass(frozen=True)
class BookingPolicy:
    """The deployment's settings: defaults for providers that set no rules of their own."""

    min_notice: timedelta
    horizon: timedelta
    hold_ttl: timedelta
    max_active_holds: int
    # Reserved (unexpired) and confirmed appointments ahead, per patient.
    max_future_appointments: int = 10
    require_verified_email: bool = False


@dataclass(frozen=True)
class ProviderRules:
    min_notice: timedelta
    horizon: timedelta
    cancellation_notice: timedelta
    daily_cap: int | None


def rules_for(provider: User, policy: BookingPolicy) -> ProviderRules:
    """The provider's own rules; what it leaves unset falls back to the deployment's."""
    return ProviderRules(
        min_notice=(
            timedelta(hours=provider.min_notice_hours) if provider.min_notice_hours is not None else policy.min_notice
        ),
        horizon=timedelta(days=provider.horizon_days) if provider.horizon_days is not None else policy.horizon,
        cancellation_notice=timedelta(hours=provider.cancellation_notice_hours or 0),
        daily_cap=provider.max_appointments_per_day,
    )


@dataclass(frozen=True)
class VisitSpec:
    """How long a visit lasts and the time kept free before and after it."""

    duration: timedelta = SLOT
    before: timedelta = timedelta(0)
    after: timedelta = timedelta(0)

    @classmethod
    def of(cls, visit_type: VisitType) -> VisitSpec:
        return cls(
            timedelta(minutes=visit_type.duration_minutes),
            timedelta(minutes=visit_type.buffer_before_minutes),
            timedelta(minutes=visit_type.buffer_after_minutes),
        )

    @property
    def slots(self) -> int:
        return int(self.duration / SLOT)


DEFAULT_VISIT = VisitSpec()
