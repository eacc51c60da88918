"""Providers' availability and the free-slot view: storing rules, listing what a patient
could reserve now, and the provider's booked appointments."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Integer,
    and_,
    cast,
    delete,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from reservations.adapters.db import Appointment, AvailabilityDay, AvailabilityPeriod, SlotDayVersion, User, VisitType
from reservations.domain.accounts import validate_timezone
from reservations.domain.availability import (
    MAX_RANGE_DAYS,
    SLOT_MINUTES,
    Availability,
    AvailabilityError,
    WeeklyPeriod,
    WeeklyWindow,
    Window,
    generate_slots,
    merge,
    parse_days,
    parse_window,
)
from reservations.domain.errors import Forbidden, NotFound, Unauthenticated, Unprocessable
from reservations.domain.policy import (
    DEFAULT_VISIT,
    MAX_BUFFER,
    MAX_BUSY_SPAN,
    BookingPolicy,
    ProviderRules,
    VisitSpec,
    rules_for,
)

if TYPE_CHECKING:
    from reservations.adapters.security import AccessClaims

ACTIVE_STATUSES = ("reserved", "confirmed")
MAX_LISTING_DAYS = 31
# Calendar bounds for every date a client sends: far enough for any real schedule, and
# keeps date arithmetic (a day after the last) away from datetime's limits.
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2199, 12, 31)
DAY_CODES = ("M", "T", "W", "Th", "F", "Sa", "Su")
# The kind of a weekly period's row where load_availability reads periods and days together
# (a day's kind is 'exception' or 'manual').
PERIOD_ROW = "period"

Slot = tuple[datetime, datetime]
SLOT_LENGTH = timedelta(minutes=SLOT_MINUTES)


@dataclass(frozen=True)
class Busy:
    """An active appointment's kept-free range (buffers included): ``until`` is when a
    hold runs out (None for a confirmed booking); ``on_day`` says the appointment starts
    on the cached day, so it counts towards that day's cap."""

    start: datetime
    end: datetime
    until: datetime | None
    on_day: bool

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now


@dataclass(frozen=True)
class DaySlots:
    """One provider-local day: every offered 15-minute slot start, and the busy ranges
    near it. Free starts for any visit type are derived on read, at a given instant, so
    one cached day serves every visit type and stays true while holds expire."""

    day: date
    starts: tuple[datetime, ...]
    busy: tuple[Busy, ...] = ()

    def booked(self, now: datetime) -> int:
        """Active appointments starting on this day (what a daily cap counts)."""
        return sum(1 for entry in self.busy if entry.on_day and entry.active(now))

    def free_starts(
        self, now: datetime, visit: VisitSpec = DEFAULT_VISIT, zone: ZoneInfo | None = None
    ) -> list[datetime]:
        # The hot path of every listing (a week is ~350 starts): the common cases, a
        # one-slot visit and a day with nothing booked, skip the per-start checks.
        slots = visit.slots
        if slots == 1:
            fitting: Sequence[datetime] = self.starts  # every offered start fits one slot
        else:
            offered = frozenset(self.starts)
            fitting = [start for start in self.starts if visit_fits(offered, start, visit, zone)]
        busy = [(entry.start, entry.end) for entry in self.busy if entry.active(now)]
        if not busy:
            return list(fitting)
        reach, lead = visit.duration + visit.after, visit.before
        return [
            start for start in fitting if not any(begin < start + reach and end > start - lead for begin, end in busy)
        ]


def visit_fits(offered: frozenset[datetime], start: datetime, visit: VisitSpec, zone: ZoneInfo | None) -> bool:
    """Whether a visit starting at ``start`` lies wholly inside the offered slots: every
    15-minute slot it covers is offered, and no DST change falls inside it (so a visit
    never straddles a skipped hour, whose neighbours are adjacent in UTC)."""
    if start not in offered:
        return False
    last = start + visit.duration - SLOT_LENGTH
    if any(start + k * SLOT_LENGTH not in offered for k in range(1, visit.slots)):
        return False
    return zone is None or visit.slots == 1 or start.astimezone(zone).utcoffset() == last.astimezone(zone).utcoffset()


DayRequest = tuple[Sequence[date], Mapping[date, str]]


class DayStore(Protocol):
    """A read-through store of computed days (the Redis cache, or nothing). Each value is
    tagged with its day's tag (see `day_tags`); a different tag is a miss."""

    def get_days(self, provider_id: int, days: Sequence[date], tags: Mapping[date, str]) -> dict[date, DaySlots]: ...

    def put_days(self, provider_id: int, days: Sequence[DaySlots], tags: Mapping[date, str]) -> None: ...


class NoStore:
    def get_days(self, provider_id: int, days: Sequence[date], tags: Mapping[date, str]) -> dict[date, DaySlots]:
        return {}

    def put_days(self, provider_id: int, days: Sequence[DaySlots], tags: Mapping[date, str]) -> None:
        return None


def get_many(store: DayStore, requests: Mapping[int, DayRequest]) -> dict[int, dict[date, DaySlots]]:
    """Days of several providers: in one round trip when the store can, else one each."""
    batched = getattr(store, "get_many", None)
    if batched is not None:
        found: dict[int, dict[date, DaySlots]] = batched(requests)
        return found
    return {provider_id: store.get_days(provider_id, days, tags) for provider_id, (days, tags) in requests.items()}


_BUMP_SLOT_DAYS = text(
    """
    INSERT INTO slot_day_versions (provider_id, day, version)
    SELECT :provider_id, d, 1 FROM unnest(CAST(:days AS date[])) AS d ORDER BY d
    ON CONFLICT (provider_id, day) DO UPDATE SET version = slot_day_versions.version + 1
    """
)


def bump_slot_days(session: Session, provider_id: int, days: Iterable[date]) -> None:
    """Make the cached values of these provider-local days stale, atomically with the
    caller's write (one statement). Days are locked in ascending order, so writers that
    bump overlapping days never deadlock on each other; callers run it as their
    transaction's last statement, after any appointment row locks."""
    ordered = sorted(set(days))
    if ordered:
        session.execute(_BUMP_SLOT_DAYS, {"provider_id": provider_id, "days": ordered})


def days_around(instant: datetime) -> list[date]:
    """The provider-local days an instant can fall on, whatever the provider's time zone:
    UTC offsets stay within a day, so the UTC date and its neighbours cover every zone."""
    return days_spanned(instant, instant)


def days_spanned(start: datetime, end: datetime) -> list[date]:
    """The provider-local days a range (an appointment's kept-free range) can touch, in
    any time zone: its UTC dates and one day either side."""
    first = start.astimezone(UTC).date() - timedelta(days=1)
    last = end.astimezone(UTC).date() + timedelta(days=1)
    return local_day_range(first, last)


def day_tags(session: Session, provider: User, days: Sequence[date]) -> dict[date, str]:
    """The tag of each day: the provider-wide `slots_version` (bumped when every day
    changes, e.g. a new time zone) and the day's own version (bumped by writes to that
    day), read in one query."""
    if not days:
        return {}
    rows = session.execute(
        select(SlotDayVersion.day, SlotDayVersion.version).where(
            SlotDayVersion.provider_id == provider.id, SlotDayVersion.day.between(min(days), max(days))
        )
    )
    versions = {day: version for day, version in rows}
    return {day: _tag(provider, versions.get(day, 0)) for day in days}


def day_tags_many(session: Session, wanted: Mapping[User, Sequence[date]]) -> dict[int, dict[date, str]]:
    """`day_tags` of several providers in one query."""
    wanted = {provider: days for provider, days in wanted.items() if days}
    if not wanted:
        return {}
    first = min(min(days) for days in wanted.values())
    last = max(max(days) for days in wanted.values())
    # Days as offsets from `first`: the driver parses an integer far faster than a date
    # (pg8000 uses strptime), and a search reads 50 providers x 7 days of them.
    offset = cast(SlotDayVersion.day - cast(literal(first), Date), Integer).label("offset")
    rows = session.execute(
        select(SlotDayVersion.provider_id, offset, SlotDayVersion.version).where(
            SlotDayVersion.provider_id.in_([provider.id for provider in wanted]),
            SlotDayVersion.day.between(first, last),
        )
    )
    versions = {(provider_id, first + timedelta(days=days)): version for provider_id, days, version in rows}
    return {
        provider.id: {day: _tag(provider, versions.get((provider.id, day), 0)) for day in days}
        for provider, days in wanted.items()
    }


def no_such_provider(provider_id: int) -> NotFound:
    return NotFound(f"provider {provider_id} not found", code="provider_not_found")


def no_such_visit_type(provider_id: int, visit_type_id: int | None) -> NotFound:
    return NotFound(
        f"visit type {visit_type_id} is not an active visit type of provider {provider_id}",
        code="visit_type_not_found",
    )


def offered_type(visit_type_id: int | None) -> ColumnElement[bool]:
    """An active visit type: the one with that id, or the provider's default."""
    wanted = VisitType.is_default if visit_type_id is None else VisitType.id == visit_type_id
    return and_(VisitType.active, wanted)


@dataclass(frozen=True)
class ListingContext:
    provider: User
    visit_type: VisitType
    versions: Mapping[date, int]


# Sent as the driver's own SQL (pg8000's "format" placeholders): no SQLAlchemy statement
# to compile or look up, the cheapest way through it on the hottest path.
_LISTING_CONTEXT = (
    "SELECT listing_context(%s::bigint, %s::integer, %s::text, %s::bigint, %s::bigint, %s::date, %s::date)"
)


def listing_context(
    session: Session,
    caller: AccessClaims | None,
    provider_id: int,
    visit_type_id: int | None,
    first: date,
    last: date,
) -> ListingContext:
    """What a listing needs before it touches the cache, in one call of the database's
    `listing_context` function (migration 0008): whether the caller's token still holds
    (as `current_user` checks it), the provider's row, the visit type (its default when
    none is named) and the versions of the provider's days first..last. Raises as
    `current_user`, `provider` and `visit_type` would, in that order."""
    who = (caller.user_id, caller.token_version, caller.role) if caller else (None, None, None)
    arguments = (*who, provider_id, visit_type_id, first, last)
    found = session.connection().exec_driver_sql(_LISTING_CONTEXT, arguments).scalar_one()
    if not found["caller_valid"]:
        raise Unauthenticated("token has been revoked", code="token_revoked")
    if found["provider"] is None:
        raise no_such_provider(provider_id)
    if found["visit_type"] is None:
        raise no_such_visit_type(provider_id, visit_type_id)
    # Detached, read-only views of the two rows: nothing here is written back.
    provider = User(role="provider", **found["provider"])
    visit_type = VisitType(provider_id=provider.id, active=True, **found["visit_type"])
    versions = {first + timedelta(days=offset): version for offset, version in found["versions"]}
    return ListingContext(provider, visit_type, versions)


def detached[Row: (User, VisitType, Appointment)](model: type[Row], row: Mapping[str, Any]) -> Row:
    """A read-only view of a row the database answered as JSON (timestamps parsed; columns
    the model does not map are left out): nothing on it is written back."""
    values: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.key in row:
            value = row[column.key]
            is_time = isinstance(column.type, DateTime) and value is not None
            values[column.key] = datetime.fromisoformat(value) if is_time else value
    return model(**values)


# The cached value's format is part of its tag: values written in an older format (one
# visit type, no busy ranges) are misses, never misread.
CACHE_FORMAT = "2"


def _tag(provider: User, day_version: int) -> str:
    return f"{CACHE_FORMAT}:{provider.slots_version}:{day_version}"


@dataclass(frozen=True)
class PostedAvailability:
    availability: Availability
    touched: frozenset[date]
    timezone: str | None


@dataclass(frozen=True)
class WeeklyHours:
    """The ``general_schedule`` of a post, as text: ``times`` are (days, start, end)."""

    start_date: date
    end_date: date
    times: Sequence[tuple[str, str, str]]


DatedHours = Sequence[tuple[date, Sequence[tuple[str, str]]]]


def parse_posted_availability(
    weekly: WeeklyHours | None, exceptions: DatedHours, manual: DatedHours, timezone: str | None
) -> PostedAvailability:
    """An availability post in the original API's notation (``"M-F"``, ``"8am"``) as
    rules, with the dates it touches; `Unprocessable` names what is wrong."""
    if timezone is not None:
        validate_timezone(timezone)
    if weekly is None and not exceptions and not manual:
        raise Unprocessable("give general_schedule, exceptions or manual_appointment_slots", code="empty_post")
    touched: set[date] = set()
    periods: tuple[WeeklyPeriod, ...] = ()
    try:
        if weekly is not None:
            if weekly.end_date < weekly.start_date:
                raise Unprocessable("general_schedule.end_date is before start_date", code="invalid_date_range")
            span = (weekly.end_date - weekly.start_date).days + 1
            if span > MAX_RANGE_DAYS:
                raise Unprocessable(
                    f"general_schedule spans {span} days; at most {MAX_RANGE_DAYS} are allowed",
                    code="invalid_date_range",
                )
            windows = tuple(
                WeeklyWindow(parse_days(days), parse_window(start, end)) for days, start, end in weekly.times
            )
            periods = (WeeklyPeriod(weekly.start_date, weekly.end_date, windows),)
            touched.update(local_day_range(weekly.start_date, weekly.end_date))
        exception_days = _dated_windows(exceptions)
        manual_days = _dated_windows(manual)
    except AvailabilityError as error:
        raise Unprocessable(str(error), code="invalid_availability") from None
    touched.update(exception_days)
    touched.update(manual_days)
    if touched and not (min(touched) >= EARLIEST_DATE and max(touched) <= LATEST_DATE):
        raise Unprocessable(f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}", code="invalid_date_range")
    return PostedAvailability(Availability(periods, exception_days, manual_days), frozenset(touched), timezone)


def _dated_windows(entries: DatedHours) -> dict[date, tuple[Window, ...]]:
    result: dict[date, tuple[Window, ...]] = {}
    for day, times in entries:
        windows = tuple(parse_window(start, end) for start, end in times)
        result[day] = result.get(day, ()) + windows
    return result


@dataclass(frozen=True)
class PostResult:
    slots: int
    conflicts: list[Appointment]
    touched: frozenset[date]


@dataclass(frozen=True)
class SlotListing:
    provider_id: int
    visit_type_id: int
    slots: list[Slot]
    days_from_store: int
    days_total: int

    @property
    def cache_outcome(self) -> str:
        """``hit`` when every day came from the store, ``miss`` when none did."""
        if self.days_from_store == self.days_total:
            return "hit"
        return "miss" if self.days_from_store == 0 else "partial"


@dataclass(frozen=True)
class OfferedSlot:
    provider_id: int
    visit_type_id: int
    start_time: datetime
    end_time: datetime


def check_listing_range(first: date, last: date) -> None:
    for value in (first, last):
        if not EARLIEST_DATE <= value <= LATEST_DATE:
            raise Unprocessable(f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}", code="invalid_date_range")
    if last < first:
        raise Unprocessable("end_date must not be before start_date", code="invalid_date_range")
    if (last - first).days + 1 > MAX_LISTING_DAYS:
        raise Unprocessable(f"a listing spans at most {MAX_LISTING_DAYS} days", code="invalid_date_range")


# Listings look at most this far back and ahead of the provider's today.
LISTING_PAST = timedelta(days=1)
LISTING_FUTURE = timedelta(days=730)


def check_listing_window(first: date, last: date, today: date) -> None:
    if first < today - LISTING_PAST or last > today + LISTING_FUTURE:
        raise Unprocessable(
            f"listings start yesterday at the earliest and end at most {LISTING_FUTURE.days} days ahead",
            code="invalid_date_range",
        )


def default_range(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    """Today to today + 6 by default; an end alone counts back six days."""
    if first is None and last is not None:
        first = max(EARLIEST_DATE, last - timedelta(days=6)) if EARLIEST_DATE <= last <= LATEST_DATE else last
    first = first or today
    if last is None:
        last = first + timedelta(days=6) if first <= LATEST_DATE - timedelta(days=6) else first
    check_listing_range(first, last)
    return first, last


def local_day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def format_days(weekdays: Iterable[int]) -> str:
    ordered = sorted(set(weekdays))
    runs: list[list[int]] = []
    for day in ordered:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_CODES[run[0]]}-{DAY_CODES[run[-1]]}")
        else:
            parts.extend(DAY_CODES[d] for d in run)
    return ",".join(parts)


def format_time(value: time | None) -> str:
    return "24:00" if value is None else value.strftime("%H:%M")


def _window_json(window: Window) -> dict[str, str]:
    return {"start": format_time(window.start), "end": format_time(window.end)}


def _window_from_json(data: dict[str, Any]) -> Window:
    end = None if data["end"] == "24:00" else time.fromisoformat(data["end"])
    return Window(time.fromisoformat(data["start"]), end)


def availability_of(
    periods: Iterable[tuple[date, date, list[dict[str, Any]]]], days: Iterable[tuple[str, date, list[dict[str, Any]]]]
) -> Availability:
    """Availability from its stored rows: weekly periods (first day, last day, windows)
    and dated days (kind, day, windows)."""
    weekly = [
        WeeklyPeriod(
            start_date=first,
            end_date=last,
            windows=tuple(WeeklyWindow(frozenset(item["days"]), _window_from_json(item)) for item in windows),
        )
        for first, last, windows in periods
    ]
    weekly.sort(key=lambda period: period.start_date)
    exceptions: dict[date, tuple[Window, ...]] = {}
    manual: dict[date, tuple[Window, ...]] = {}
    for kind, day, windows in days:
        target = exceptions if kind == "exception" else manual
        target[day] = tuple(_window_from_json(item) for item in windows)
    return Availability(tuple(weekly), exceptions, manual)


def availability_from_json(periods: Sequence[Sequence[Any]], days: Sequence[Sequence[Any]]) -> Availability:
    """`availability_of` the rows as a database function returns them in JSON (dates as
    ISO text): ``[first, last, windows]`` periods and ``[kind, day, windows]`` days."""
    return availability_of(
        ((date.fromisoformat(first), date.fromisoformat(last), windows) for first, last, windows in periods),
        ((kind, date.fromisoformat(day), windows) for kind, day, windows in days),
    )


class ProviderSchedule:
    """Availability rules and free slots of providers."""

    def __init__(
        self, session: Session, *, policy: BookingPolicy, now: datetime, store: DayStore | None = None
    ) -> None:
        self.session = session
        self.policy = policy
        self.now = now
        self.store: DayStore = store or NoStore()

    # --- providers -----------------------------------------------------------------

    def provider(self, provider_id: int, *, for_update: bool = False, for_share: bool = False) -> User:
        query = select(User).where(User.id == provider_id, User.role == "provider")
        if for_update or for_share:
            # The caller may have loaded this row before (authentication does): a locked
            # read must refresh it, or it would act on values read before the lock.
            query = query.execution_options(populate_existing=True)
        if for_share:
            # Bookings check the rules under FOR SHARE, so a concurrent availability post
            # (FOR NO KEY UPDATE) cannot change them between the check and the insert.
            query = query.with_for_update(read=True)
        if for_update:
            # FOR NO KEY UPDATE: it serialises writers of the row like FOR UPDATE, but not
            # the foreign-key checks (FOR KEY SHARE) of rows referencing the provider, such
            # as a booking's new `slot_day_versions` row. Under FOR UPDATE, a booking that
            # holds some of its day rows could wait on this lock in that check while the
            # poster waits for those day rows: a deadlock.
            query = query.with_for_update(key_share=True)
        user = self.session.scalars(query).first()
        if user is None:
            raise no_such_provider(provider_id)
        return user

    def list_providers(self, *, limit: int, offset: int) -> Sequence[User]:
        return self.session.scalars(
            select(User).where(User.role == "provider").order_by(User.id).limit(limit).offset(offset)
        ).all()

    def require_owner_or_admin(self, actor: User, provider_id: int) -> User:
        if actor.role not in ("provider", "admin"):
            raise Forbidden("only the provider or an admin can do this", code="wrong_role")
        provider = self.provider(provider_id)
        if actor.role == "provider" and actor.id != provider_id:
            raise Forbidden("providers can only manage their own schedule", code="not_your_schedule")
        return provider

    # --- availability rules --------------------------------------------------------

    def load_availability(self, provider_id: int, first: date | None = None, last: date | None = None) -> Availability:
        """The provider's weekly periods and dated days (of ``first``..``last`` if given),
        in one statement (a booking reads them in `queue_booking`, migration 0010)."""
        periods_query = select(
            literal(PERIOD_ROW).label("kind"),
            AvailabilityPeriod.start_date.label("first"),
            AvailabilityPeriod.end_date.label("last"),
            AvailabilityPeriod.windows,
        ).where(AvailabilityPeriod.provider_id == provider_id)
        days_query = select(
            AvailabilityDay.kind, AvailabilityDay.day, AvailabilityDay.day, AvailabilityDay.windows
        ).where(AvailabilityDay.provider_id == provider_id)
        if first is not None and last is not None:
            periods_query = periods_query.where(
                AvailabilityPeriod.start_date <= last, AvailabilityPeriod.end_date >= first
            )
            days_query = days_query.where(AvailabilityDay.day.between(first, last))
        periods: list[tuple[date, date, list[dict[str, Any]]]] = []
        days: list[tuple[str, date, list[dict[str, Any]]]] = []
        for kind, start, end, windows in self.session.execute(union_all(periods_query, days_query)):
            if kind == PERIOD_ROW:
                periods.append((start, end, windows))
            else:
                days.append((kind, start, windows))
        return availability_of(periods, days)

    def _store_availability(self, provider_id: int, availability: Availability) -> None:
        # Rules, not slots: a year of weekly hours is one row, whatever the slot count.
        self.session.execute(delete(AvailabilityPeriod).where(AvailabilityPeriod.provider_id == provider_id))
        self.session.execute(delete(AvailabilityDay).where(AvailabilityDay.provider_id == provider_id))
        self.session.add_all(
            AvailabilityPeriod(
                provider_id=provider_id,
                start_date=period.start_date,
                end_date=period.end_date,
                windows=[{"days": sorted(weekly.weekdays), **_window_json(weekly.window)} for weekly in period.windows],
            )
            for period in availability.periods
        )
        self.session.flush()
        day_rows = [
            {"provider_id": provider_id, "day": day, "kind": kind, "windows": [_window_json(w) for w in windows]}
            for kind, days in (("exception", availability.exceptions), ("manual", availability.manual))
            for day, windows in days.items()
        ]
        if day_rows:  # one multi-row INSERT: pg8000 would send executemany as a round trip per row
            self.session.execute(insert(AvailabilityDay).values(day_rows))

    def post_availability(self, actor: User, provider_id: int, posted: PostedAvailability) -> PostResult:
        if actor.role != "provider" or actor.id != provider_id:
            if actor.role in ("provider", "admin"):
                self.provider(provider_id)  # unknown id is 404 before the permission answer
            raise Forbidden("only the provider can publish their own availability", code="not_your_schedule")
        # The row lock serialises concurrent posts of one provider (read-merge-write).
        provider = self.provider(provider_id, for_update=True)
        if posted.timezone and posted.timezone != provider.timezone:
            provider.timezone = posted.timezone
            provider.slots_version += 1  # every local day shifts: all cached days are stale
        merged = merge(self.load_availability(provider_id), posted.availability, posted.touched)
        self._store_availability(provider_id, merged)
        # Only the dates the post replaced can offer different slots (see `merge`).
        bump_slot_days(self.session, provider_id, _replaced_days(posted))
        if not posted.touched:
            return PostResult(0, [], posted.touched)
        zone = ZoneInfo(provider.timezone)
        first, last = min(posted.touched), max(posted.touched)
        offered_slots: set[datetime] = set()
        for run_first, run_last in contiguous_runs(posted.touched):
            offered_slots.update(
                start
                for start, _ in generate_slots(merged, zone, run_first, run_last)
                if _local_day(start, zone) in posted.touched
            )
        slot_count = sum(1 for start in offered_slots if start > self.now)
        offered = frozenset(offered_slots)
        conflicts = [
            appointment
            for appointment in self._active_appointments(provider_id, *self._utc_bounds(zone, first, last))
            if _local_day(appointment.start_time, zone) in posted.touched
            and not visit_fits(offered, appointment.start_time, _spec_of(appointment), zone)
        ]
        return PostResult(slot_count, conflicts, posted.touched)

    # --- free slots ----------------------------------------------------------------

    def _utc_bounds(self, zone: ZoneInfo, first: date, last: date) -> tuple[datetime, datetime]:
        start = datetime.combine(first, time.min, zone) - timedelta(hours=1)
        end = datetime.combine(last + timedelta(days=1), time.min, zone) + timedelta(hours=1)
        return start, end

    def _active_appointments(self, provider_id: int, start: datetime, end: datetime) -> Sequence[Appointment]:
        return self.session.scalars(
            select(Appointment).where(self._active_between(provider_id, start, end)).order_by(Appointment.start_time)
        ).all()

    def _active_between(self, provider_id: int, start: datetime, end: datetime) -> ColumnElement[bool]:
        """Active appointments starting in [start, end)."""
        return and_(
            Appointment.provider_id == provider_id,
            Appointment.start_time >= start,
            Appointment.start_time < end,
            self._active(),
        )

    def _active(self) -> ColumnElement[bool]:
        """Appointments that take their range: held (until the deadline), confirmed, or
        attended (completed or no-show: the time stays taken)."""
        return or_(
            Appointment.status.in_(("confirmed", "completed", "no_show")),
            and_(Appointment.status == "reserved", Appointment.expires_at > self.now),
        )

    def _busy_between(self, provider_id: int, start: datetime, end: datetime) -> ColumnElement[bool]:
        """Active appointments whose kept-free range overlaps [start, end)."""
        return and_(
            Appointment.provider_id == provider_id,
            # No kept-free range is longer than MAX_BUSY_SPAN, so this lower bound keeps
            # the index scan to the window instead of the provider's whole history.
            Appointment.busy_start > start - MAX_BUSY_SPAN,
            Appointment.busy_start < end,
            Appointment.busy_end > start,
            self._active(),
        )

    def compute_days(self, provider: User, days: Sequence[date]) -> list[DaySlots]:
        """Offered and taken slots of each day, from Postgres (the source of truth)."""
        # Per run of consecutive days: the days asked for (cached keys, say) may lie
        # centuries apart, and one generation over the whole span would be refused.
        computed: dict[date, DaySlots] = {}
        for first, last in contiguous_runs(days):
            run = [day for day in days if first <= day <= last]
            computed.update((slots.day, slots) for slots in self._compute_run(provider, run, first, last))
        return [computed[day] for day in days]

    def _compute_run(self, provider: User, days: Sequence[date], first: date, last: date) -> list[DaySlots]:
        zone = ZoneInfo(provider.timezone)
        availability = self.load_availability(provider.id, first, last)
        by_day: dict[date, list[datetime]] = {day: [] for day in days}
        for start, _ in generate_slots(availability, zone, first, last):
            local = _local_day(start, zone)
            if local in by_day:
                by_day[local].append(start)
        # A visit starting on a day ends within it and keeps at most MAX_BUFFER free on
        # either side, so only busy ranges reaching that far into the day matter.
        low, high = self._utc_bounds(zone, first, last)
        rows = self.session.execute(
            select(
                Appointment.start_time,
                Appointment.busy_start,
                Appointment.busy_end,
                Appointment.status,
                Appointment.expires_at,
            ).where(self._busy_between(provider.id, low - MAX_BUFFER, high + MAX_BUFFER))
        )
        busy: dict[date, list[Busy]] = {day: [] for day in days}
        # Each day's reach, computed once: every busy range is checked against every day.
        reach = []
        for day in days:
            day_low, day_high = self._utc_bounds(zone, day, day)
            reach.append((day, day_low - MAX_BUFFER, day_high + MAX_BUFFER))
        for start_time, busy_start, busy_end, status, expires_at in rows:
            until = expires_at if status == "reserved" else None
            own_day = _local_day(start_time, zone)
            for day, reach_low, reach_high in reach:
                if busy_start < reach_high and busy_end > reach_low:
                    busy[day].append(Busy(busy_start, busy_end, until, own_day == day))
        return [DaySlots(day, tuple(by_day[day]), tuple(sorted(busy[day], key=_busy_order))) for day in days]

    def provider_and_visit_type(self, provider_id: int, visit_type_id: int | None) -> tuple[User, VisitType]:
        """`provider(provider_id, for_share=True)` and `visit_type(...)` in one statement,
        with the same errors in the same order (a booking's first read)."""
        query = (
            select(User, VisitType)
            .outerjoin(VisitType, and_(VisitType.provider_id == User.id, offered_type(visit_type_id)))
            .where(User.id == provider_id, User.role == "provider")
            .with_for_update(read=True, of=User)
            .execution_options(populate_existing=True)
        )
        found = self.session.execute(query).first()
        if found is None:
            raise no_such_provider(provider_id)
        provider, visit_type = found
        if visit_type is None:
            raise no_such_visit_type(provider_id, visit_type_id)
        return provider, visit_type

    def visit_type(self, provider_id: int, visit_type_id: int | None) -> VisitType:
        """The provider's active visit type with that id, or its default type."""
        query = select(VisitType).where(VisitType.provider_id == provider_id, offered_type(visit_type_id))
        found = self.session.scalars(query).first()
        if found is None:
            raise no_such_visit_type(provider_id, visit_type_id)
        return found

    def rules(self, provider: User) -> ProviderRules:
        return rules_for(provider, self.policy)

    def _days(
        self, provider: User, days: Sequence[date], tags: Mapping[date, str], cached: Mapping[date, DaySlots]
    ) -> tuple[dict[date, DaySlots], int]:
        """Every day asked for: from the store where its value is current, else computed
        (and written back)."""
        missing = [day for day in days if day not in cached]
        computed = self.compute_days(provider, missing)
        if computed:
            self.store.put_days(provider.id, computed, tags)
        return {**cached, **{d.day: d for d in computed}}, len(days) - len(missing)

    def _offered(
        self,
        provider: User,
        visit_type: VisitType,
        days: Sequence[date],
        all_days: Mapping[date, DaySlots],
        limit: int | None = None,
    ) -> list[Slot]:
        """Free starts of a visit type on those days, under the provider's rules now (the
        first ``limit`` of them, if given)."""
        rules = self.rules(provider)
        zone = ZoneInfo(provider.timezone)
        visit = VisitSpec.of(visit_type)
        earliest = self.now + rules.min_notice
        latest = self.now + rules.horizon
        slots: list[Slot] = []
        for day in days:
            plan = all_days[day]
            if rules.daily_cap is not None and plan.booked(self.now) >= rules.daily_cap:
                continue  # a day at its cap offers nothing
            slots.extend(
                (start, start + visit.duration)
                for start in plan.free_starts(self.now, visit, zone)
                if earliest <= start <= latest
            )
            if limit is not None and len(slots) >= limit:
                return slots[:limit]
        return slots

    def free_slots(
        self,
        provider_id: int,
        first: date | None,
        last: date | None,
        visit_type_id: int | None = None,
        *,
        caller: AccessClaims | None = None,
    ) -> SlotListing:
        """Free slots of a visit type on provider-local days first..last. The caller's
        token check (``caller``), the provider, the visit type and the day versions come
        from one statement: a cached listing costs one round trip to Postgres."""
        utc_today = self.now.astimezone(UTC).date()
        # The provider's today is within a day of UTC's: the versions of every day either
        # answer could ask for are read, and those of the days asked for kept.
        candidates = [default_range(first, last, utc_today + timedelta(days=shift)) for shift in (-1, 0, 1)]
        context = listing_context(
            self.session,
            caller,
            provider_id,
            visit_type_id,
            min(lo for lo, _ in candidates),
            max(hi for _, hi in candidates),
        )
        provider, visit_type = context.provider, context.visit_type
        zone = ZoneInfo(provider.timezone)
        today = self.now.astimezone(zone).date()
        first, last = default_range(first, last, today)
        check_listing_window(first, last, today)
        # Days past the provider's horizon offer nothing: they are neither computed nor
        # cached, so a client cannot fill Redis with far-future days.
        horizon_day = (self.now + self.rules(provider).horizon).astimezone(zone).date()
        days = local_day_range(first, min(last, horizon_day)) if first <= horizon_day else []
        # Versions are read before the data they tag: a write that commits in between is
        # then in the computed data but not in its tag, which only causes a later miss,
        # never a stale hit.
        tags = {day: _tag(provider, context.versions.get(day, 0)) for day in days}
        all_days, from_store = self._days(provider, days, tags, self.store.get_days(provider_id, days, tags))
        slots = self._offered(provider, visit_type, days, all_days)
        return SlotListing(provider_id, visit_type.id, slots, days_from_store=from_store, days_total=len(days))

    def search_availability(
        self,
        providers: Sequence[User],
        first: date,
        last: date,
        *,
        duration_minutes: int | None,
        limit: int,
    ) -> list[OfferedSlot]:
        """Free slots of several providers (provider-local days first..last), earliest
        first: per provider its default visit type, or every active type of that duration.
        Versions of all providers come in one query and cached days in one round trip."""
        if not providers:
            return []
        query = select(VisitType).where(VisitType.provider_id.in_([p.id for p in providers]), VisitType.active)
        if duration_minutes is None:
            query = query.where(VisitType.is_default)
        else:
            query = query.where(VisitType.duration_minutes == duration_minutes)
        types: dict[int, list[VisitType]] = {}
        for visit_type in self.session.scalars(query.order_by(VisitType.id)):
            types.setdefault(visit_type.provider_id, []).append(visit_type)
        wanted = {provider: local_day_range(first, last) for provider in providers if provider.id in types}
        tags = day_tags_many(self.session, wanted)
        cached = get_many(self.store, {p.id: (days, tags[p.id]) for p, days in wanted.items()})
        # Each provider's slots come out in time order and at most `limit` of them can make
        # the answer, so the lists are cut there and merged, not all built and sorted.
        streams: list[list[tuple[datetime, int, int, datetime]]] = []
        for provider, days in wanted.items():
            all_days, _ = self._days(provider, days, tags[provider.id], cached.get(provider.id, {}))
            provider_id = provider.id
            for visit_type in types[provider_id]:
                type_id = visit_type.id
                slots = self._offered(provider, visit_type, days, all_days, limit)
                streams.append([(start, provider_id, type_id, end) for start, end in slots])
        merged = itertools.islice(heapq.merge(*streams), limit)
        return [OfferedSlot(provider_id, type_id, start, end) for start, provider_id, type_id, end in merged]

    def next_available(self, provider_id: int, visit_type_id: int | None) -> OfferedSlot | None:
        """The earliest bookable slot within the provider's horizon, a week of days at a
        time through the cache, stopping at the first week that has one."""
        provider = self.provider(provider_id)
        visit_type = self.visit_type(provider_id, visit_type_id)
        rules = self.rules(provider)
        zone = ZoneInfo(provider.timezone)
        day = (self.now + rules.min_notice).astimezone(zone).date()
        last = (self.now + rules.horizon).astimezone(zone).date()
        while day <= last:
            days = local_day_range(day, min(day + timedelta(days=6), last))
            tags = day_tags(self.session, provider, days)
            all_days, _ = self._days(provider, days, tags, self.store.get_days(provider_id, days, tags))
            slots = self._offered(provider, visit_type, days, all_days)
            if slots:
                start, end = min(slots)
                return OfferedSlot(provider_id, visit_type.id, start, end)
            day = days[-1] + timedelta(days=1)
        return None

    def booked_appointments(
        self, actor: User, provider_id: int, first: date | None, last: date | None
    ) -> list[tuple[Appointment, str]]:
        provider = self.require_owner_or_admin(actor, provider_id)
        zone = ZoneInfo(provider.timezone)
        first, last = default_range(first, last, self.now.astimezone(zone).date())
        start = datetime.combine(first, time.min, zone)
        end = datetime.combine(last + timedelta(days=1), time.min, zone)
        appointments = self._active_appointments(provider_id, start, end)
        rows = self.session.execute(select(User.id, User.name).where(User.id.in_({a.patient_id for a in appointments})))
        names = {user_id: name for user_id, name in rows}
        return [(a, names.get(a.patient_id, "")) for a in appointments if start <= a.start_time < end]


def contiguous_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Runs of consecutive dates, none longer than one slot generation may span."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day and (day - runs[-1][0]).days < MAX_RANGE_DAYS:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _replaced_days(posted: PostedAvailability) -> set[date]:
    """Every date `merge` lets the post replace: the touched ones and any it mentions."""
    availability = posted.availability
    days = set(posted.touched) | set(availability.exceptions) | set(availability.manual)
    for period in availability.periods:
        days.update(local_day_range(period.start_date, period.end_date))
    return days


def _local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def _busy_order(entry: Busy) -> tuple[datetime, datetime]:
    return entry.start, entry.end


def _spec_of(appointment: Appointment) -> VisitSpec:
    """The visit an appointment was booked as (its own range and buffers)."""
    return VisitSpec(
        appointment.end_time - appointment.start_time,
        appointment.start_time - appointment.busy_start,
        appointment.busy_end - appointment.end_time,
    )
