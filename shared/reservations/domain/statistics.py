"""How a provider's calendar is used over a range of its local days, computed in SQL over
the (provider_id, start_time) index, with the offered time from its availability rules.

Definitions (README, "Provider statistics"):
- an appointment belongs to the range when its start falls on one of the provider-local days;
- a hold past its deadline counts as expired, whether or not the sweeper marked it;
- booked minutes: the duration of appointments that took the time (confirmed, completed,
  no_show); offered minutes: 15 minutes per offered start of the provider's availability;
- utilisation: booked / offered minutes (null when nothing was offered);
- no-show rate: no_show / (completed + no_show), the visits whose attendance is recorded;
- cancellation rate: cancelled / (cancelled + confirmed + completed + no_show), the bookings
  that were not moved or left to expire;
- lead time: from the appointment's creation to its start, median over booked ones, hours;
- by weekday (ISO, 1 = Monday) and hour: booked appointments by their local start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from reservations.adapters.db import User
from reservations.domain.availability import generate_slots
from reservations.domain.errors import Unprocessable
from reservations.domain.scheduling import EARLIEST_DATE, LATEST_DATE, ProviderSchedule, contiguous_runs

MAX_STATS_DAYS = 366
SLOT_MINUTES = 15
STATUSES = ("reserved", "confirmed", "cancelled", "expired", "rescheduled", "completed", "no_show")

_AGGREGATES = text(
    """
    WITH ranged AS (
        SELECT CASE WHEN status = 'reserved' AND expires_at <= :now THEN 'expired' ELSE status END AS status,
               start_time, end_time, created_at
        FROM appointments
        WHERE provider_id = :provider AND start_time >= :start AND start_time < :end
    )
    SELECT
        (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
           FROM (SELECT status, count(*) AS n FROM ranged GROUP BY status) AS counted) AS by_status,
        (SELECT coalesce(sum(extract(epoch FROM end_time - start_time)) / 60, 0)
           FROM ranged WHERE status IN ('confirmed', 'completed', 'no_show')) AS booked_minutes,
        (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM start_time - created_at) / 3600)
           FROM ranged WHERE status IN ('confirmed', 'completed', 'no_show')) AS median_lead_hours,
        (SELECT coalesce(jsonb_object_agg(weekday, n), '{}'::jsonb) FROM (
            SELECT extract(isodow FROM start_time AT TIME ZONE :zone)::int AS weekday, count(*) AS n
            FROM ranged WHERE status IN ('confirmed', 'completed', 'no_show') GROUP BY 1) AS w) AS by_weekday,
        (SELECT coalesce(jsonb_object_agg(hour, n), '{}'::jsonb) FROM (
            SELECT extract(hour FROM start_time AT TIME ZONE :zone)::int AS hour, count(*) AS n
            FROM ranged WHERE status IN ('confirmed', 'completed', 'no_show') GROUP BY 1) AS h) AS by_hour
    """
)


@dataclass(frozen=True)
class ProviderStats:
    provider_id: int
    start_date: date
    end_date: date
    timezone: str
    counts: dict[str, int]
    booked_minutes: float
    offered_minutes: int
    utilisation: float | None
    no_show_rate: float | None
    cancellation_rate: float | None
    median_lead_time_hours: float | None
    by_weekday: dict[int, int]
    by_hour: dict[int, int]


def check_stats_range(first: date, last: date) -> None:
    for value in (first, last):
        if not EARLIEST_DATE <= value <= LATEST_DATE:
            raise Unprocessable(f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}", code="invalid_date_range")
    if last < first:
        raise Unprocessable("end_date must not be before start_date", code="invalid_date_range")
    if (last - first).days + 1 > MAX_STATS_DAYS:
        raise Unprocessable(f"statistics span at most {MAX_STATS_DAYS} days", code="invalid_date_range")


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def provider_stats(schedule: ProviderSchedule, actor: User, provider_id: int, first: date, last: date) -> ProviderStats:
    check_stats_range(first, last)
    provider = schedule.require_owner_or_admin(actor, provider_id)
    zone = ZoneInfo(provider.timezone)
    start = datetime.combine(first, time.min, zone)
    end = datetime.combine(last + timedelta(days=1), time.min, zone)
    session: Session = schedule.session
    row: Any = session.execute(
        _AGGREGATES,
        {"provider": provider_id, "start": start, "end": end, "now": schedule.now, "zone": provider.timezone},
    ).one()
    counts = {status: int(row.by_status.get(status, 0)) for status in STATUSES}
    availability = schedule.load_availability(provider_id, first, last)
    offered = (
        sum(
            1
            for run_first, run_last in contiguous_runs(_days(first, last))
            for _ in generate_slots(availability, zone, run_first, run_last)
        )
        * SLOT_MINUTES
    )
    booked = float(row.booked_minutes or 0)
    attended = counts["completed"] + counts["no_show"]
    bookings = counts["cancelled"] + counts["confirmed"] + attended
    return ProviderStats(
        provider_id=provider_id,
        start_date=first,
        end_date=last,
        timezone=provider.timezone,
        counts=counts,
        booked_minutes=booked,
        offered_minutes=offered,
        utilisation=_ratio(booked, offered),
        no_show_rate=_ratio(counts["no_show"], attended),
        cancellation_rate=_ratio(counts["cancelled"], bookings),
        median_lead_time_hours=round(float(row.median_lead_hours), 2) if row.median_lead_hours is not None else None,
        by_weekday={int(k): int(v) for k, v in sorted(row.by_weekday.items(), key=lambda kv: int(kv[0]))},
        by_hour={int(k): int(v) for k, v in sorted(row.by_hour.items(), key=lambda kv: int(kv[0]))},
    )


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
