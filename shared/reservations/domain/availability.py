"""Availability rules and the 15-minute slots they generate.

Rules hold wall-clock times in the provider's IANA zone; slots come out in UTC.
Pure module: no I/O and no settings, so handlers, the sweeper and tests share it.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "MAX_RANGE_DAYS",
    "SLOT_MINUTES",
    "Availability",
    "AvailabilityError",
    "WeeklyPeriod",
    "WeeklyWindow",
    "Window",
    "generate_slots",
    "merge",
    "parse_days",
    "parse_wall_time",
    "parse_window",
    "slot_on_grid",
    "windows_on",
]

SLOT_MINUTES = 15
MAX_RANGE_DAYS = 366

_ONE_DAY = timedelta(days=1)
_SLOT = timedelta(minutes=SLOT_MINUTES)
_SLOT_US = SLOT_MINUTES * 60 * 1_000_000
_SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
# Grid offsets from midnight, built once: making timedeltas per slot is measurable.
_GRID = tuple(k * _SLOT for k in range(_SLOTS_PER_DAY + 1))

_DAY_CODES = {"m": 0, "t": 1, "w": 2, "th": 3, "f": 4, "sa": 5, "su": 6}
# [0-9] rather than \d: int() would accept other scripts' digits.
_TIME_12H = re.compile(r"(?P<hour>[0-9]{1,2})(?::(?P<minute>[0-9]{2}))?\s*(?P<half>am|pm)", re.IGNORECASE)
_TIME_24H = re.compile(r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})")


class AvailabilityError(ValueError):
    """Invalid availability; the message is meant for API clients."""


@dataclass(frozen=True)
class Window:
    """Wall-clock window [start, end) in the provider's zone.

    Ordered like ``order=True`` would order it, except that an end of None
    (24:00) sorts after every time instead of raising TypeError.
    """

    start: time
    end: time | None  # None is the midnight that ends the day (24:00)

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or (self.end is not None and self.end.tzinfo is not None):
            raise AvailabilityError("window times must be wall-clock times without a zone")
        if self.end is not None and self.end <= self.start:
            raise AvailabilityError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")

    def _key(self) -> tuple[time, bool, time]:
        return (
            self.start,
            self.end is None,
            time.min if self.end is None else self.end,
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self._key() >= other._key()


@dataclass(frozen=True)
class WeeklyWindow:
    """A window repeated on some weekdays (0=Monday .. 6=Sunday)."""

    weekdays: frozenset[int]
    window: Window

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise AvailabilityError(f"weekdays must be a non-empty subset of 0..6, got {sorted(self.weekdays)}")


@dataclass(frozen=True)
class WeeklyPeriod:
    """Weekly hours valid from start_date to end_date inclusive."""

    start_date: date
    end_date: date
    windows: tuple[WeeklyWindow, ...]

    def __post_init__(self) -> None:
        if self.end_date < self.start_date:
            raise AvailabilityError(f"end date {self.end_date} is before start date {self.start_date}")


@dataclass(frozen=True)
class Availability:
    """Weekly periods, per-date exceptions (replace) and manual windows (add)."""

    periods: tuple[WeeklyPeriod, ...]
    exceptions: Mapping[date, tuple[Window, ...]]
    manual: Mapping[date, tuple[Window, ...]]

    def __post_init__(self) -> None:
        # Copies, so a caller mutating its own dict cannot change a frozen value.
        object.__setattr__(self, "exceptions", dict(self.exceptions))
        object.__setattr__(self, "manual", dict(self.manual))
        for earlier, later in itertools.pairwise(self.periods):
            if later.start_date <= earlier.end_date:
                raise AvailabilityError(
                    "weekly periods must be sorted and must not overlap: "
                    f"{earlier.start_date}..{earlier.end_date} and "
                    f"{later.start_date}..{later.end_date}"
                )

    @classmethod
    def empty(cls) -> Availability:
        """No availability at all."""
        return cls((), {}, {})


def parse_days(spec: str) -> frozenset[int]:
    """Parse day codes like ``M-F``, ``M,W,F``, ``M-W,Sa`` or ``F-M`` (wraps)."""
    if not spec.strip():
        raise AvailabilityError(f"no day codes in {spec!r}")
    days: set[int] = set()
    # Split on separators only, so "Th", "Sa" and "Su" stay whole codes.
    for item in spec.split(","):
        ends = [_day_code(code, spec) for code in item.split("-")]
        if len(ends) == 1:
            days.add(ends[0])
        elif len(ends) == 2:
            first, last = ends
            days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
        else:
            raise AvailabilityError(f"bad day range {item.strip()!r} in {spec!r}")
    return frozenset(days)


def _day_code(code: str, spec: str) -> int:
    text = code.strip()
    if not text:
        raise AvailabilityError(f"missing day code in {spec!r}")
    try:
        return _DAY_CODES[text.lower()]
    except KeyError:
        raise AvailabilityError(f"unknown day code {text!r} in {spec!r}") from None


def parse_wall_time(text: str) -> time:
    """Parse ``8am``, ``8:30 PM``, ``12am``, ``14:00``... (``24:00`` gives 00:00)."""
    return _parse_time(text)[0]


def _parse_time(text: str) -> tuple[time, bool]:
    """Return the time and whether it was written as 24:00."""
    cleaned = text.strip().lower()
    if cleaned == "noon":
        return time(12), False
    if cleaned == "midnight":
        return time(0), False
    if match := _TIME_12H.fullmatch(cleaned):
        hour, minute = int(match["hour"]), int(match["minute"] or 0)
        if 1 <= hour <= 12 and minute <= 59:
            return time(hour % 12 + (12 if match["half"] == "pm" else 0), minute), False
    elif match := _TIME_24H.fullmatch(cleaned):
        hour, minute = int(match["hour"]), int(match["minute"])
        if hour == 24 and minute == 0:
            return time(0), True
        if hour <= 23 and minute <= 59:
            return time(hour, minute), False
    raise AvailabilityError(f"unparsable time {text!r}")


def parse_window(start: str, end: str) -> Window:
    """Parse a window; an end at midnight means the end of the day."""
    start_time, start_is_24 = _parse_time(start)
    end_time, _ = _parse_time(end)
    end_of_day = end_time == time(0)
    # A start of 24:00 would otherwise read as 00:00 and open a whole day.
    if start_is_24 or (not end_of_day and end_time <= start_time):
        raise AvailabilityError(f"end {end!r} must be after start {start!r}")
    return Window(start_time, None if end_of_day else end_time)


def merge(stored: Availability, posted: Availability, touched: Iterable[date]) -> Availability:
    """Let ``posted`` replace ``stored`` on every touched date; other dates keep theirs.

    Every date ``posted`` mentions counts as touched even if absent from ``touched``,
    so the result can never hold two periods for one date.
    """
    single = set(touched) | set(posted.exceptions) | set(posted.manual)
    # Ranges rather than expanded dates, so a long posted range stays cheap.
    spans = sorted([(period.start_date, period.end_date) for period in posted.periods] + [(day, day) for day in single])
    kept = [piece for period in stored.periods for piece in _clip(period, spans)]

    def untouched(day: date) -> bool:
        return day not in single and not any(period.start_date <= day <= period.end_date for period in posted.periods)

    return Availability(
        periods=tuple(sorted([*kept, *posted.periods], key=lambda period: period.start_date)),
        exceptions={
            **{day: w for day, w in stored.exceptions.items() if untouched(day)},
            **posted.exceptions,
        },
        manual={
            **{day: w for day, w in stored.manual.items() if untouched(day)},
            **posted.manual,
        },
    )


def _clip(period: WeeklyPeriod, spans: list[tuple[date, date]]) -> Iterator[WeeklyPeriod]:
    """Yield the parts of ``period`` outside ``spans`` (sorted by start)."""
    start = period.start_date
    for low, high in spans:
        if high < start:
            continue
        if low > period.end_date:
            break
        if low > start:
            yield replace(period, start_date=start, end_date=low - _ONE_DAY)
        if high >= period.end_date:
            return
        start = high + _ONE_DAY
    yield replace(period, start_date=start)


def windows_on(availability: Availability, day: date) -> tuple[Window, ...]:
    """Windows that apply on ``day``, sorted and without duplicates."""
    if day in availability.exceptions:
        base = availability.exceptions[day]
    else:
        period = _period_on(availability.periods, day)
        base = () if period is None else _weekday_windows(period, day.weekday())
    return tuple(sorted({*base, *availability.manual.get(day, ())}))


def _period_on(periods: tuple[WeeklyPeriod, ...], day: date) -> WeeklyPeriod | None:
    index = bisect_right(periods, day, key=lambda period: period.start_date) - 1
    if index >= 0 and day <= periods[index].end_date:
        return periods[index]
    return None


def _weekday_windows(period: WeeklyPeriod, weekday: int) -> tuple[Window, ...]:
    return tuple(weekly.window for weekly in period.windows if weekday in weekly.weekdays)


def generate_slots(
    availability: Availability, tz: ZoneInfo, first_day: date, last_day: date
) -> list[tuple[datetime, datetime]]:
    """UTC (start, end) of every 15-minute slot on local days first_day..last_day.

    A wall time skipped by a DST change yields no slot; a repeated one yields a
    slot at its first occurrence.
    """
    day_count = (last_day - first_day).days + 1
    if day_count > MAX_RANGE_DAYS:
        raise AvailabilityError(f"date range {first_day}..{last_day} is longer than {MAX_RANGE_DAYS} days")
    periods, exceptions, manual = (
        availability.periods,
        availability.exceptions,
        availability.manual,
    )
    weekly_grids: dict[int, tuple[tuple[int, ...], ...]] = {}
    slots: list[tuple[datetime, datetime]] = []
    index = max(bisect_right(periods, first_day, key=lambda period: period.start_date) - 1, 0)
    day = first_day
    for _ in range(day_count):
        if day in exceptions:
            grid = _grid_points(exceptions[day])
        else:
            while index < len(periods) and periods[index].end_date < day:
                index += 1
            if index < len(periods) and periods[index].start_date <= day:
                if index not in weekly_grids:
                    weekly_grids[index] = tuple(
                        _grid_points(_weekday_windows(periods[index], weekday)) for weekday in range(7)
                    )
                grid = weekly_grids[index][day.weekday()]
            else:
                grid = ()
        if day in manual:
            grid = tuple(sorted({*grid, *_grid_points(manual[day])}))
        if grid:
            _add_day(slots, tz, day, grid)
        day += _ONE_DAY
    # With fold=0, wall-clock order is UTC order unless two transitions nearly
    # coincide; tzdata has none, and checking costs a fraction of a millisecond.
    if any(later[0] <= earlier[0] for earlier, later in itertools.pairwise(slots)):
        slots = sorted(set(slots))
    return slots


def _grid_points(windows: Iterable[Window]) -> tuple[int, ...]:
    """Indexes (quarter hours since midnight) of the whole slots inside ``windows``."""
    points: set[int] = set()
    for window in windows:
        # Ceiling: a window starting off the grid begins at the next grid point.
        first = -(-_micros(window.start) // _SLOT_US)
        stop = _SLOTS_PER_DAY if window.end is None else _micros(window.end) // _SLOT_US
        points.update(range(first, stop))
    return tuple(sorted(points))


def _micros(moment: time) -> int:
    seconds = (moment.hour * 60 + moment.minute) * 60 + moment.second
    return seconds * 1_000_000 + moment.microsecond


def _add_day(
    slots: list[tuple[datetime, datetime]],
    tz: ZoneInfo,
    day: date,
    grid: tuple[int, ...],
) -> None:
    midnight = datetime(day.year, day.month, day.day)
    first, last = midnight + _GRID[grid[0]], midnight + _GRID[grid[-1]]
    offset = tz.utcoffset(first)
    # fold=0 reads the offset in force before a transition and fold=1 the one
    # after, so these agree only if no transition touches [first, last]. (Two
    # could cancel out, but tzdata never has two within 48 h.) Then the whole
    # day shares one offset and needs no per-slot zone lookups.
    if offset is not None and offset == tz.utcoffset(last.replace(fold=1)):
        base = (midnight - offset).replace(tzinfo=UTC)
        slots.extend((base + _GRID[point], base + _GRID[point + 1]) for point in grid)
        return
    for point in grid:
        wall = midnight + _GRID[point]
        start = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: first occurrence
        # A skipped wall time comes back as a different one.
        if start.astimezone(tz).replace(tzinfo=None) == wall:
            slots.append((start, start + _SLOT))


def slot_on_grid(instant: datetime) -> bool:
    """Whether an aware instant starts a slot on the UTC quarter-hour grid.

    Naive datetimes are never on the grid: their instant is unknown.
    """
    if instant.utcoffset() is None:
        return False
    utc = instant.astimezone(UTC)
    return utc.minute % SLOT_MINUTES == 0 and utc.second == 0 and utc.microsecond == 0
