"""Unit tests for visits longer than one slot: `DaySlots.free_starts` and `visit_fits`
with a `VisitSpec` (duration and buffers), and 60-minute visits across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reservations.domain.availability import Availability, Window, generate_slots, parse_window
from reservations.domain.policy import SLOT, VisitSpec
from reservations.domain.scheduling import Busy, DaySlots, visit_fits

DAY = date(2027, 1, 6)
MIDNIGHT = datetime.combine(DAY, time(), UTC)
NOW = MIDNIGHT - timedelta(days=2)
GRID = [MIDNIGHT + k * SLOT for k in range(96)]
FIVE = timedelta(minutes=5)
TINY = timedelta(microseconds=1)
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")

# --- strategies -----------------------------------------------------------------------------

visits = st.builds(
    VisitSpec,
    st.integers(1, 32).map(lambda n: n * SLOT),
    st.integers(0, 48).map(lambda n: n * FIVE),
    st.integers(0, 48).map(lambda n: n * FIVE),
)


@st.composite
def offered_starts(draw: st.DrawFn) -> tuple[datetime, ...]:
    """Runs of consecutive slots of the day (what windows give), possibly touching."""
    chosen: set[datetime] = set()
    for first, length in draw(st.lists(st.tuples(st.integers(0, 95), st.integers(1, 40)), max_size=4)):
        chosen.update(GRID[first : first + length])
    return tuple(sorted(chosen))


@st.composite
def busy_ranges(draw: st.DrawFn) -> Busy:
    """A kept-free range on the 5-minute grid near the day; live, expired or confirmed."""
    start = MIDNIGHT + draw(st.integers(-48, 24 * 12 + 48)) * FIVE
    end = start + draw(st.integers(1, 120)) * FIVE
    until = draw(st.none() | st.sampled_from([NOW - SLOT, NOW, NOW + SLOT]))
    return Busy(start, end, until, draw(st.booleans()))


def active(entry: Busy, now: datetime) -> bool:
    return entry.until is None or entry.until > now


def covered(start: datetime, visit: VisitSpec) -> list[datetime]:
    """The 15-minute slots a visit starting at ``start`` occupies."""
    return [start + k * SLOT for k in range(visit.slots)]


def kept_free(start: datetime, visit: VisitSpec) -> tuple[datetime, datetime]:
    return start - visit.before, start + visit.duration + visit.after


def overlaps(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# --- free_starts and visit_fits, properties -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(starts=offered_starts(), busy=st.lists(busy_ranges(), max_size=6), visit=visits)
def test_no_free_start_keeps_free_a_range_that_an_active_appointment_uses(
    starts: tuple[datetime, ...], busy: list[Busy], visit: VisitSpec
) -> None:
    free = DaySlots(DAY, starts, tuple(busy)).free_starts(NOW, visit)
    for start in free:
        for entry in busy:
            if active(entry, NOW):
                assert not overlaps(kept_free(start, visit), (entry.start, entry.end)), (start, entry)


@settings(max_examples=300, deadline=None)
@given(starts=offered_starts(), busy=st.lists(busy_ranges(), max_size=6), visit=visits)
def test_every_free_visit_lies_inside_the_offered_slots(
    starts: tuple[datetime, ...], busy: list[Busy], visit: VisitSpec
) -> None:
    offered = set(starts)
    for start in DaySlots(DAY, starts, tuple(busy)).free_starts(NOW, visit, UTC):
        assert set(covered(start, visit)) <= offered, start


@settings(max_examples=300, deadline=None)
@given(starts=offered_starts(), busy=st.lists(busy_ranges(), max_size=6), visit=visits)
def test_free_starts_are_exactly_the_fitting_starts_clear_of_live_appointments(
    starts: tuple[datetime, ...], busy: list[Busy], visit: VisitSpec
) -> None:
    # Buffers need not lie inside the offered slots; expired holds keep nothing free;
    # ranges that only touch ([start, end) ends) do not collide.
    offered = set(starts)
    live = [(entry.start, entry.end) for entry in busy if active(entry, NOW)]
    expected = [
        start
        for start in starts
        if set(covered(start, visit)) <= offered and not any(overlaps(kept_free(start, visit), taken) for taken in live)
    ]
    assert DaySlots(DAY, starts, tuple(busy)).free_starts(NOW, visit) == expected


@settings(max_examples=300, deadline=None)
@given(starts=offered_starts(), start=st.sampled_from(GRID), visit=visits)
def test_visit_fits_when_every_slot_it_covers_is_offered(
    starts: tuple[datetime, ...], start: datetime, visit: VisitSpec
) -> None:
    offered = frozenset(starts)
    expected = set(covered(start, visit)) <= offered
    assert visit_fits(offered, start, visit, None) is expected
    assert visit_fits(offered, start, visit, UTC) is expected  # no DST change in UTC


def test_a_visit_may_end_where_a_buffer_starts_and_buffers_may_leave_the_slots() -> None:
    # Given 9:00-10:00 offered and a confirmed booking keeping 10:00-10:30 free
    starts = tuple(MIDNIGHT + timedelta(hours=9) + k * SLOT for k in range(4))
    booked = Busy(MIDNIGHT + timedelta(hours=10), MIDNIGHT + timedelta(hours=10, minutes=30), None, True)
    # When a 30-minute visit with 15 minutes kept free either side is asked for
    visit = VisitSpec(timedelta(minutes=30), SLOT, SLOT)
    free = DaySlots(DAY, starts, (booked,)).free_starts(NOW, visit)
    # Then 9:00 fits (its before-buffer lies outside the offered slots), 9:15 fits (its
    # after-buffer ends exactly at 10:00), 9:30 would keep 10:00-10:15 free: refused
    assert free == [MIDNIGHT + timedelta(hours=9), MIDNIGHT + timedelta(hours=9, minutes=15)]


# --- DST -------------------------------------------------------------------------------------------

HOUR_VISIT = VisitSpec(timedelta(minutes=60))
EARLY_HOURS = parse_window("12am", "4am")
DST_DAYS = [
    (NEW_YORK, date(2027, 3, 14)),  # 2:00 EST -> 3:00 EDT
    (NEW_YORK, date(2027, 11, 7)),  # 2:00 EDT -> 1:00 EST
    (LONDON, date(2027, 3, 28)),  # 1:00 GMT -> 2:00 BST
    (LONDON, date(2027, 10, 31)),  # 2:00 BST -> 1:00 GMT
]


def day_of(zone: ZoneInfo, day: date, window: Window) -> DaySlots:
    availability = Availability((), {}, {day: (window,)})
    return DaySlots(day, tuple(start for start, _ in generate_slots(availability, zone, day, day)))


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def assert_never_straddles(start: datetime, visit: VisitSpec, zone: ZoneInfo) -> None:
    """The visit's wall-clock length is its real length and one UTC offset holds for all
    of it. Its last instant (end minus 1 µs) is checked: a visit may end exactly when the
    clocks change (1:00-2:00 EST on the spring-forward day ends at 3:00 EDT), which
    straddles nothing."""
    last = start + visit.duration - TINY
    assert start.astimezone(zone).utcoffset() == last.astimezone(zone).utcoffset(), start
    assert wall(last, zone) - wall(start, zone) + TINY == visit.duration, start


@pytest.mark.parametrize(
    ("zone", "day", "walls"),
    [
        # Spring forward: no visit starts 1:15-1:45 (it would run into the missing hour).
        (NEW_YORK, date(2027, 3, 14), ["00:00", "00:15", "00:30", "00:45", "01:00", "03:00"]),
        (LONDON, date(2027, 3, 28), ["00:00", "02:00", "02:15", "02:30", "02:45", "03:00"]),
        # Fall back: the repeated 1:xx is offered once (its first occurrence), so a visit
        # starting at 1:15 or later in it would need the skipped second occurrence.
        (
            NEW_YORK,
            date(2027, 11, 7),
            ["00:00", "00:15", "00:30", "00:45", "01:00", "02:00", "02:15", "02:30", "02:45", "03:00"],
        ),
        (
            LONDON,
            date(2027, 10, 31),
            ["00:00", "00:15", "00:30", "00:45", "01:00", "02:00", "02:15", "02:30", "02:45", "03:00"],
        ),
    ],
)
def test_hour_visits_on_a_dst_day_start_only_where_the_hour_is_whole(
    zone: ZoneInfo, day: date, walls: list[str]
) -> None:
    free = day_of(zone, day, EARLY_HOURS).free_starts(NOW, HOUR_VISIT, zone)
    assert [start.astimezone(zone).strftime("%H:%M") for start in free] == walls
    for start in free:
        assert_never_straddles(start, HOUR_VISIT, zone)
        assert start.astimezone(zone).fold == 0  # never the second occurrence of a wall time


@pytest.mark.parametrize(("zone", "day"), [DST_DAYS[1], DST_DAYS[3]])
def test_the_repeated_hour_is_offered_at_its_first_occurrence_only(zone: ZoneInfo, day: date) -> None:
    starts = day_of(zone, day, EARLY_HOURS).starts
    walls = [wall(start, zone) for start in starts]
    one_am = [start for start in starts if start.astimezone(zone).hour == 1]
    assert len(walls) == len(set(walls))  # each wall time once
    assert len(one_am) == 4 and all(start.astimezone(zone).fold == 0 for start in one_am)
    # The earlier UTC reading of 1:00 is the first occurrence (summer time).
    assert one_am[0] == datetime.combine(day, time(1), zone).astimezone(UTC)
    assert one_am[0].astimezone(zone).dst() != timedelta(0)


@settings(max_examples=200, deadline=None)
@given(
    zone_day=st.sampled_from(DST_DAYS),
    quarters=st.integers(0, 95).flatmap(lambda low: st.tuples(st.just(low), st.integers(low + 1, 96))),
    minutes=st.sampled_from([30, 45, 60, 60, 60, 90, 120, 180]),
)
def test_no_visit_straddles_a_dst_change(
    zone_day: tuple[ZoneInfo, date], quarters: tuple[int, int], minutes: int
) -> None:
    # Given a window of any quarter hours on a DST day (96: to midnight)
    zone, day = zone_day
    low, high = quarters
    window = Window(time(low // 4, 15 * (low % 4)), None if high == 96 else time(high // 4, 15 * (high % 4)))
    visit = VisitSpec(timedelta(minutes=minutes))
    plan = day_of(zone, day, window)
    for start in plan.free_starts(NOW, visit, zone):
        assert_never_straddles(start, visit, zone)
        assert set(covered(start, visit)) <= set(plan.starts)
