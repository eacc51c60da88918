"""Unit tests for reservations.domain.availability: parsing, rules, merge and slots."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    parse_wall_time,
    parse_window,
    slot_on_grid,
    windows_on,
)

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
SLOT = timedelta(minutes=SLOT_MINUTES)
ONE_DAY = timedelta(days=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def weekly(first: date, last: date, days: str, start: str, end: str) -> WeeklyPeriod:
    window = WeeklyWindow(parse_days(days), parse_window(start, end))
    return WeeklyPeriod(first, last, (window,))


def starts(slots: list[tuple[datetime, datetime]]) -> list[datetime]:
    return [start for start, _ in slots]


def daily(tz: ZoneInfo, window: Window, day: date) -> list[datetime]:
    availability = Availability((), {}, {day: (window,)})
    return starts(generate_slots(availability, tz, day, day))


def dates(first: date, last: date) -> list[date]:
    return [first + ONE_DAY * n for n in range((last - first).days + 1)]


# --- parse_days -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("M-F", {0, 1, 2, 3, 4}),
        ("m-f", {0, 1, 2, 3, 4}),
        ("  M - F  ", {0, 1, 2, 3, 4}),
        ("M-Su", {0, 1, 2, 3, 4, 5, 6}),
        ("Sa-Su", {5, 6}),
        ("SA,su", {5, 6}),
        ("M,W,F", {0, 2, 4}),
        ("M-W,F", {0, 1, 2, 4}),
        ("T", {1}),
        ("Th", {3}),
        ("TH", {3}),
        ("T,Th", {1, 3}),
        ("T-Th", {1, 2, 3}),
        ("M,M", {0}),
        ("W-W", {2}),
        # Reversed ranges wrap around the week.
        ("F-M", {4, 5, 6, 0}),
        ("Su-M", {6, 0}),
        ("Th-T", {3, 4, 5, 6, 0, 1}),
    ],
)
def test_parse_days_accepts_codes_ranges_and_lists(spec: str, expected: set[int]) -> None:
    assert parse_days(spec) == frozenset(expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no day codes in ''"),
        ("   ", "no day codes in '   '"),
        ("M-Xy", "unknown day code 'Xy' in 'M-Xy'"),
        ("S", "unknown day code 'S' in 'S'"),
        ("Tu", "unknown day code 'Tu' in 'Tu'"),
        ("TTh", "unknown day code 'TTh' in 'TTh'"),
        ("Monday", "unknown day code 'Monday' in 'Monday'"),
        ("M,,F", "missing day code in 'M,,F'"),
        ("M-", "missing day code in 'M-'"),
        ("M-W-F", "bad day range 'M-W-F' in 'M-W-F'"),
    ],
)
def test_parse_days_rejects_bad_specs_naming_the_code(spec: str, message: str) -> None:
    with pytest.raises(AvailabilityError) as raised:
        parse_days(spec)
    assert str(raised.value) == message


# --- parse_wall_time / parse_window ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8am", time(8)),
        ("8 AM", time(8)),
        ("08am", time(8)),
        ("8:30am", time(8, 30)),
        ("8:30 pm", time(20, 30)),
        ("11:59PM", time(23, 59)),
        ("12pm", time(12)),
        ("12:30pm", time(12, 30)),
        ("12am", time(0)),
        ("12:15am", time(0, 15)),
        ("14:00", time(14)),
        ("9:05", time(9, 5)),
        ("08:00", time(8)),
        ("00:00", time(0)),
        ("23:59", time(23, 59)),
        ("24:00", time(0)),
        (" 7pm ", time(19)),
        ("noon", time(12)),
        ("Midnight", time(0)),
    ],
)
def test_parse_wall_time_accepts_12_and_24_hour_forms(text: str, expected: time) -> None:
    assert parse_wall_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8",
        "0am",
        "13pm",
        "8:60am",
        "25:00",
        "24:01",
        "24:30",
        "8:60",
        "9:5",
        "8:30:00",
        "-1:00",
        "8amm",
        "8 a m",
        "eight",
        "pm",
        "\u0661\u0662:\u0660\u0660",  # Arabic-Indic digits: int() would take them
    ],
)
def test_parse_wall_time_rejects_anything_else(text: str) -> None:
    with pytest.raises(AvailabilityError) as raised:
        parse_wall_time(text)
    assert str(raised.value) == f"unparsable time {text!r}"


def test_parse_window_keeps_ordinary_times() -> None:
    assert parse_window("8am", "4pm") == Window(time(8), time(16))


@pytest.mark.parametrize("end", ["12am", "00:00", "0:00", "24:00", "midnight"])
def test_parse_window_reads_an_end_at_midnight_as_end_of_day(end: str) -> None:
    assert parse_window("8pm", end) == Window(time(20), None)


def test_parse_window_from_midnight_to_midnight_is_the_whole_day() -> None:
    assert parse_window("12am", "12am") == Window(time(0), None)


@pytest.mark.parametrize(
    ("start", "end"),
    [("4pm", "8am"), ("9am", "9am"), ("14:00", "13:59"), ("24:00", "1am")],
)
def test_parse_window_rejects_end_not_after_start(start: str, end: str) -> None:
    with pytest.raises(AvailabilityError) as raised:
        parse_window(start, end)
    assert str(raised.value) == f"end {end!r} must be after start {start!r}"


def test_parse_window_reports_unparsable_times() -> None:
    with pytest.raises(AvailabilityError, match="unparsable time '25:00'"):
        parse_window("8am", "25:00")


# --- value objects ----------------------------------------------------------


def test_window_rejects_end_not_after_start_when_built_directly() -> None:
    with pytest.raises(AvailabilityError, match="must be after start"):
        Window(time(9), time(8))


def test_windows_sort_with_end_of_day_last() -> None:
    windows = [Window(time(8), None), Window(time(8), time(9)), Window(time(7), None)]
    assert sorted(windows) == [windows[2], windows[1], windows[0]]
    assert Window(time(8), time(23, 59)) < Window(time(8), None)
    assert Window(time(8), None) >= Window(time(8), None)


def test_weekly_window_rejects_bad_weekdays() -> None:
    with pytest.raises(AvailabilityError, match="weekdays"):
        WeeklyWindow(frozenset({7}), Window(time(8), time(9)))
    with pytest.raises(AvailabilityError, match="weekdays"):
        WeeklyWindow(frozenset(), Window(time(8), time(9)))


def test_weekly_period_rejects_reversed_dates() -> None:
    with pytest.raises(AvailabilityError, match="before start date"):
        WeeklyPeriod(date(2027, 2, 1), date(2027, 1, 31), ())


def test_availability_rejects_overlapping_periods() -> None:
    first = weekly(date(2027, 1, 1), date(2027, 1, 31), "M-F", "8am", "4pm")
    second = weekly(date(2027, 1, 31), date(2027, 2, 28), "M-F", "8am", "4pm")
    with pytest.raises(AvailabilityError, match="must not overlap"):
        Availability((first, second), {}, {})


def test_availability_does_not_share_the_callers_dicts() -> None:
    # Given an availability built from a caller's dict
    exceptions: dict[date, tuple[Window, ...]] = {}
    availability = Availability((), exceptions, {})
    # When the caller later mutates its dict
    exceptions[date(2027, 1, 1)] = ()
    # Then the frozen value is unchanged
    assert availability.exceptions == {}
    assert Availability.empty() == Availability((), {}, {})


# --- grid cutting, exceptions, manual windows -------------------------------


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (Window(time(8, 10), time(9)), ["08:15", "08:30", "08:45"]),
        (Window(time(8), time(8, 20)), ["08:00"]),
        (Window(time(8, 5), time(8, 14)), []),
        (Window(time(8, 1), time(8, 29)), []),
        (Window(time(8, 0, 30), time(8, 30)), ["08:15"]),
        (Window(time(23), None), ["23:00", "23:15", "23:30", "23:45"]),
    ],
)
def test_windows_are_cut_into_whole_slots_on_the_quarter_hour_grid(window: Window, expected: list[str]) -> None:
    day = date(2027, 6, 1)
    got = daily(ZoneInfo("UTC"), window, day)
    assert [start.strftime("%H:%M") for start in got] == expected


def test_overlapping_windows_give_unique_slots() -> None:
    day = date(2027, 6, 1)
    availability = Availability(
        (),
        {day: (parse_window("8am", "9am"),)},
        {day: (parse_window("8:30am", "9:30am"), parse_window("8am", "9am"))},
    )
    slots = generate_slots(availability, ZoneInfo("UTC"), day, day)
    assert len(slots) == 6
    assert windows_on(availability, day) == (
        parse_window("8am", "9am"),
        parse_window("8:30am", "9:30am"),
    )


def test_exceptions_replace_weekly_hours_and_manual_windows_add_to_them() -> None:
    # Given M-F 8-4 with a day off, replaced hours and manual extras
    period = weekly(date(2027, 1, 4), date(2027, 1, 31), "M-F", "8am", "4pm")
    day_off, short_day, extra_day = date(2027, 1, 5), date(2027, 1, 6), date(2027, 1, 7)
    outside = date(2027, 2, 3)
    availability = Availability(
        (period,),
        {day_off: (), short_day: (parse_window("9am", "10am"),), outside: ()},
        {
            extra_day: (parse_window("6pm", "7pm"),),
            day_off: (parse_window("1pm", "2pm"),),
            outside: (parse_window("1pm", "2pm"),),
        },
    )
    # Then each date gets exactly its own windows
    assert windows_on(availability, date(2027, 1, 4)) == (parse_window("8am", "4pm"),)
    assert windows_on(availability, day_off) == (parse_window("1pm", "2pm"),)
    assert windows_on(availability, short_day) == (parse_window("9am", "10am"),)
    assert windows_on(availability, extra_day) == (
        parse_window("8am", "4pm"),
        parse_window("6pm", "7pm"),
    )
    assert windows_on(availability, date(2027, 1, 9)) == ()  # Saturday
    assert windows_on(availability, outside) == (parse_window("1pm", "2pm"),)
    # And the slots follow
    counts = Counter(
        start.astimezone(NEW_YORK).date() for start in starts(generate_slots(availability, NEW_YORK, day_off, outside))
    )
    assert counts[day_off] == 4
    assert counts[short_day] == 4
    assert counts[extra_day] == 32 + 4
    assert counts[outside] == 4


def test_exception_on_a_date_without_weekly_hours_adds_hours() -> None:
    day = date(2027, 1, 9)
    availability = Availability((), {day: (parse_window("10am", "11am"),)}, {})
    assert daily(NEW_YORK, parse_window("10am", "11am"), day) == starts(
        generate_slots(availability, NEW_YORK, day, day)
    )


def test_original_api_example_payload() -> None:
    # Given the original API's example: M-F 8am-4pm in New York for January 2027,
    # a day off on the 15th, short hours on the 18th and a Saturday manual window
    availability = Availability(
        (weekly(date(2027, 1, 4), date(2027, 1, 31), "M-F", "8am", "4pm"),),
        {date(2027, 1, 15): (), date(2027, 1, 18): (parse_window("9am", "12pm"),)},
        {date(2027, 1, 9): (parse_window("10:00", "12:00"),)},
    )
    # When slots are generated for a range wider than the schedule
    slots = generate_slots(availability, NEW_YORK, date(2027, 1, 1), date(2027, 2, 2))
    # Then each local day has exactly the expected number of slots
    per_day = Counter(start.astimezone(NEW_YORK).date() for start in starts(slots))
    expected = {day: 32 for day in dates(date(2027, 1, 4), date(2027, 1, 29)) if day.weekday() < 5}
    expected[date(2027, 1, 15)] = 0
    expected[date(2027, 1, 18)] = 12
    expected[date(2027, 1, 9)] = 8
    assert {day: n for day, n in per_day.items()} == {day: n for day, n in expected.items() if n}
    assert len(slots) == 596
    # And the instants are UTC: 8am EST is 13:00Z
    assert slots[0] == (utc("2027-01-04T13:00"), utc("2027-01-04T13:15"))
    assert (utc("2027-01-04T20:45"), utc("2027-01-04T21:00")) in slots
    assert (utc("2027-01-04T21:00"), utc("2027-01-04T21:15")) not in slots
    assert (utc("2027-01-09T15:00"), utc("2027-01-09T15:15")) in slots
    assert utc("2027-01-18T13:45") not in starts(slots)
    assert utc("2027-01-18T14:00") in starts(slots)
    assert slots[-1] == (utc("2027-01-29T20:45"), utc("2027-01-29T21:00"))


# --- DST ----------------------------------------------------------------------


def test_new_york_spring_forward_gap_yields_no_slot() -> None:
    # Given 1am-4am local on 2027-03-14, when 2:00-2:59 does not exist
    got = daily(NEW_YORK, parse_window("1am", "4am"), date(2027, 3, 14))
    # Then 1:xx EST and 3:xx EDT are offered, nothing for 2:xx
    assert got == [utc(f"2027-03-14T06:{m:02}") for m in (0, 15, 30, 45)] + [
        utc(f"2027-03-14T07:{m:02}") for m in (0, 15, 30, 45)
    ]


def test_new_york_autumn_ambiguous_hour_yields_first_occurrence_only() -> None:
    # Given midnight-3am local on 2027-11-07, when 1:00-1:59 happens twice
    got = daily(NEW_YORK, parse_window("12am", "3am"), date(2027, 11, 7))
    # Then 1:xx is offered once, in EDT (05:xxZ), never again in EST (06:xxZ)
    assert got == [utc(f"2027-11-07T{hour:02}:{m:02}") for hour in (4, 5, 7) for m in (0, 15, 30, 45)]
    assert all(start.astimezone(NEW_YORK).fold == 0 for start in got)


def test_london_spring_forward_gap_yields_no_slot() -> None:
    got = daily(LONDON, parse_window("12am", "3am"), date(2027, 3, 28))
    assert got == [utc(f"2027-03-28T{hour:02}:{m:02}") for hour in (0, 1) for m in (0, 15, 30, 45)]
    assert [start.astimezone(LONDON).hour for start in got] == [0] * 4 + [2] * 4


def test_london_autumn_ambiguous_hour_yields_first_occurrence_only() -> None:
    got = daily(LONDON, parse_window("12am", "3am"), date(2027, 10, 31))
    assert got == [utc(f"2027-10-30T23:{m:02}") for m in (0, 15, 30, 45)] + [
        utc(f"2027-10-31T{hour:02}:{m:02}") for hour in (0, 2) for m in (0, 15, 30, 45)
    ]


@pytest.mark.parametrize(
    ("tz", "change", "before", "after"),
    [
        (NEW_YORK, date(2027, 3, 14), "14:00", "13:00"),
        (NEW_YORK, date(2027, 11, 7), "13:00", "14:00"),
        (LONDON, date(2027, 3, 28), "09:00", "08:00"),
        (LONDON, date(2027, 10, 31), "08:00", "09:00"),
    ],
)
def test_nine_am_stays_nine_am_local_across_a_change(tz: ZoneInfo, change: date, before: str, after: str) -> None:
    # Given 9-9:15 every day around a DST change
    period = weekly(change - ONE_DAY, change + ONE_DAY, "M-Su", "9am", "9:15am")
    availability = Availability((period,), {}, {})
    # When slots are generated
    got = starts(generate_slots(availability, tz, change - ONE_DAY, change + ONE_DAY))
    # Then every slot is 9am local and the UTC hour shifts by one
    assert [start.astimezone(tz).time() for start in got] == [time(9)] * 3
    assert [start.strftime("%H:%M") for start in got] == [before, after, after]


def test_slot_straddling_the_gap_is_kept_and_lasts_fifteen_real_minutes() -> None:
    got = generate_slots(
        Availability((), {}, {date(2027, 3, 14): (parse_window("1:45am", "3:15am"),)}),
        NEW_YORK,
        date(2027, 3, 14),
        date(2027, 3, 14),
    )
    assert got == [
        (utc("2027-03-14T06:45"), utc("2027-03-14T07:00")),
        (utc("2027-03-14T07:00"), utc("2027-03-14T07:15")),
    ]


# --- month and year ends ----------------------------------------------------------


def test_period_crossing_a_month_end() -> None:
    availability = Availability((weekly(date(2027, 1, 25), date(2027, 2, 5), "M-F", "8am", "4pm"),), {}, {})
    slots = generate_slots(availability, NEW_YORK, date(2027, 1, 20), date(2027, 2, 10))
    per_day = Counter(start.astimezone(NEW_YORK).date() for start in starts(slots))
    assert len(slots) == 10 * 32
    assert per_day[date(2027, 1, 29)] == per_day[date(2027, 2, 1)] == 32
    assert date(2027, 1, 30) not in per_day
    assert date(2027, 2, 8) not in per_day


def test_evening_window_on_new_years_eve_lands_in_the_next_utc_year() -> None:
    # Given 8pm-midnight on Friday 2027-12-31 and a manual window on Saturday
    availability = Availability(
        (weekly(date(2027, 12, 27), date(2028, 1, 7), "M-F", "8pm", "12am"),),
        {},
        {date(2028, 1, 1): (parse_window("10am", "10:30am"),)},
    )
    # When slots are generated across the year end
    slots = generate_slots(availability, NEW_YORK, date(2027, 12, 31), date(2028, 1, 1))
    # Then 20:00-23:45 EST are 01:00-04:45Z on 2028-01-01
    assert starts(slots) == [utc(f"2028-01-01T{hour:02}:{m:02}") for hour in range(1, 5) for m in (0, 15, 30, 45)] + [
        utc("2028-01-01T15:00"),
        utc("2028-01-01T15:15"),
    ]
    assert slots[15][1] == utc("2028-01-01T05:00")


def test_morning_on_new_years_day_in_auckland_is_the_previous_utc_year() -> None:
    got = daily(ZoneInfo("Pacific/Auckland"), parse_window("8am", "8:15am"), date(2028, 1, 1))
    assert got == [utc("2027-12-31T19:00")]


def test_period_crossing_a_year_end() -> None:
    availability = Availability((weekly(date(2027, 12, 27), date(2028, 1, 7), "M-F", "8am", "4pm"),), {}, {})
    slots = generate_slots(availability, NEW_YORK, date(2027, 12, 1), date(2028, 1, 31))
    assert len(slots) == 10 * 32
    assert slots[0][0] == utc("2027-12-27T13:00")
    assert slots[-1][1] == utc("2028-01-07T21:00")


# --- range limits and grid check --------------------------------------------------


def test_generate_slots_limits_the_range() -> None:
    availability = Availability((weekly(date(2027, 1, 1), date(2028, 12, 31), "M-Su", "8am", "9am"),), {}, {})
    first = date(2027, 1, 1)
    last = first + timedelta(days=MAX_RANGE_DAYS - 1)
    assert len(generate_slots(availability, NEW_YORK, first, last)) == 4 * MAX_RANGE_DAYS
    with pytest.raises(AvailabilityError, match="longer than 366 days"):
        generate_slots(availability, NEW_YORK, first, last + ONE_DAY)
    assert generate_slots(availability, NEW_YORK, last, first) == []
    assert generate_slots(Availability.empty(), NEW_YORK, first, last) == []


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc("2027-01-04T13:00"), True),
        (utc("2027-01-04T13:45"), True),
        (utc("2027-01-04T13:07"), False),
        (utc("2027-01-04T13:00:01"), False),
        (utc("2027-01-04T13:00:00.000001"), False),
        (datetime(2027, 1, 4, 9, tzinfo=ZoneInfo("Asia/Kathmandu")), True),
        (datetime(2027, 1, 4, 9, tzinfo=timezone(timedelta(hours=-3, minutes=-30))), True),
        (datetime(2027, 1, 4, 9, tzinfo=timezone(timedelta(minutes=7))), False),
        (datetime(2027, 1, 4, 13), False),  # naive: the instant is unknown
    ],
)
def test_slot_on_grid(instant: datetime, expected: bool) -> None:
    assert slot_on_grid(instant) is expected


# --- merge ------------------------------------------------------------------------

OLD = (WeeklyWindow(parse_days("M-F"), parse_window("8am", "4pm")),)
NEW = (WeeklyWindow(parse_days("M-Th"), parse_window("9am", "5pm")),)


def test_merge_clips_an_older_period_that_partly_overlaps_the_posted_range() -> None:
    # Given January stored and Jan 20 - Feb 10 posted
    stored = Availability((WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),), {}, {})
    posted = Availability((WeeklyPeriod(date(2027, 1, 20), date(2027, 2, 10), NEW),), {}, {})
    # When merged
    merged = merge(stored, posted, dates(date(2027, 1, 20), date(2027, 2, 10)))
    # Then the older period ends the day before the posted one starts
    assert merged.periods == (
        WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 19), OLD),
        WeeklyPeriod(date(2027, 1, 20), date(2027, 2, 10), NEW),
    )


def test_merge_splits_an_older_period_around_a_posted_range_inside_it() -> None:
    stored = Availability((WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),), {}, {})
    posted = Availability((WeeklyPeriod(date(2027, 1, 10), date(2027, 1, 15), NEW),), {}, {})
    merged = merge(stored, posted, dates(date(2027, 1, 10), date(2027, 1, 15)))
    assert merged.periods == (
        WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 9), OLD),
        WeeklyPeriod(date(2027, 1, 10), date(2027, 1, 15), NEW),
        WeeklyPeriod(date(2027, 1, 16), date(2027, 1, 31), OLD),
    )


def test_merge_replaces_a_period_covered_entirely() -> None:
    stored = Availability((WeeklyPeriod(date(2027, 1, 5), date(2027, 1, 9), OLD),), {}, {})
    posted = Availability((WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), NEW),), {}, {})
    merged = merge(stored, posted, dates(date(2027, 1, 1), date(2027, 1, 31)))
    assert merged.periods == posted.periods


def test_merge_single_touched_dates_punch_holes() -> None:
    # Given January stored, and a post naming only an exception and a manual window
    stored = Availability((WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),), {}, {})
    day_off, extra = date(2027, 1, 15), date(2027, 1, 31)
    posted = Availability((), {day_off: ()}, {extra: (parse_window("6pm", "7pm"),)})
    # When merged
    merged = merge(stored, posted, [day_off, extra])
    # Then those single dates leave the weekly period; all other dates keep it
    assert merged.periods == (
        WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 14), OLD),
        WeeklyPeriod(date(2027, 1, 16), date(2027, 1, 30), OLD),
    )
    assert windows_on(merged, day_off) == ()
    assert windows_on(merged, extra) == (parse_window("6pm", "7pm"),)
    assert windows_on(merged, date(2027, 1, 14)) == (parse_window("8am", "4pm"),)


def test_merge_treats_dates_posted_but_not_listed_as_touched() -> None:
    stored = Availability((WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),), {}, {})
    posted = Availability((WeeklyPeriod(date(2027, 1, 10), date(2027, 1, 15), NEW),), {}, {})
    assert merge(stored, posted, []) == merge(stored, posted, dates(date(2027, 1, 10), date(2027, 1, 15)))


def test_merge_replaces_exceptions_and_manual_only_on_touched_dates() -> None:
    # Given stored exceptions/manual windows inside and outside the posted range
    inside, outside = date(2027, 1, 12), date(2027, 1, 5)
    stored = Availability(
        (WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),),
        {inside: (), outside: ()},
        {inside: (parse_window("7pm", "8pm"),), outside: (parse_window("7pm", "8pm"),)},
    )
    posted = Availability((WeeklyPeriod(date(2027, 1, 10), date(2027, 1, 15), NEW),), {}, {})
    # When merged
    merged = merge(stored, posted, dates(date(2027, 1, 10), date(2027, 1, 15)))
    # Then only the touched date loses them
    assert merged.exceptions == {outside: ()}
    assert merged.manual == {outside: (parse_window("7pm", "8pm"),)}
    assert windows_on(merged, inside) == (parse_window("9am", "5pm"),)


def test_merge_with_touched_date_and_nothing_posted_clears_that_date() -> None:
    stored = Availability(
        (WeeklyPeriod(date(2027, 1, 1), date(2027, 1, 31), OLD),),
        {date(2027, 1, 4): (parse_window("9am", "10am"),)},
        {},
    )
    merged = merge(stored, Availability.empty(), [date(2027, 1, 4), date(2027, 1, 1)])
    assert merged.periods == (
        WeeklyPeriod(date(2027, 1, 2), date(2027, 1, 3), OLD),
        WeeklyPeriod(date(2027, 1, 5), date(2027, 1, 31), OLD),
    )
    assert windows_on(merged, date(2027, 1, 4)) == ()
    assert merged.exceptions == {}


def test_merge_of_ranges_over_ranges_keeps_few_periods() -> None:
    # Given monthly posts made one after another, each overlapping the last
    availability = Availability.empty()
    for month in range(1, 13):
        first = date(2027, month, 1)
        posted = Availability((WeeklyPeriod(first, first + timedelta(days=44), OLD),), {}, {})
        availability = merge(availability, posted, dates(first, first + timedelta(days=44)))
    # Then each post only clipped the previous one
    assert len(availability.periods) == 12
    assert availability.periods[-1].end_date == date(2028, 1, 14)


# --- properties -------------------------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight
    "UTC",
]


def transition_days(tz: ZoneInfo, year: int) -> list[date]:
    found = []
    for day in dates(date(year, 1, 1), date(year, 12, 31)):
        midnight = datetime(day.year, day.month, day.day)
        if tz.utcoffset(midnight) != tz.utcoffset(midnight + ONE_DAY):
            found.append(day)
    return found


TRANSITIONS = sorted({day for key in ZONES for year in (2026, 2027) for day in transition_days(ZoneInfo(key), year)})

clock_times = st.builds(
    time,
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59),
    st.sampled_from([0, 0, 0, 30]),
)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start, end = sorted([draw(clock_times), draw(clock_times)])
    to_midnight = start == end or draw(st.booleans())
    return Window(start, None if to_midnight else end)


window_tuples = st.lists(windows(), max_size=3).map(tuple)
days_in_play = st.dates(date(2026, 12, 1), date(2027, 12, 31))
# Merges are checked date by date: a narrower span is faster and collides more.
merge_days = st.dates(date(2027, 1, 1), date(2027, 3, 31))


@st.composite
def availabilities(draw: st.DrawFn, days: st.SearchStrategy[date] = days_in_play) -> Availability:
    bounds = sorted(draw(st.sets(days, max_size=6)))
    periods = []
    for first, last in zip(bounds[::2], bounds[1::2], strict=False):
        weekly_windows = draw(
            st.lists(
                st.builds(
                    WeeklyWindow,
                    st.frozensets(st.integers(0, 6), min_size=1),
                    windows(),
                ),
                max_size=3,
            )
        )
        periods.append(WeeklyPeriod(first, last, tuple(weekly_windows)))
    exceptions = draw(st.dictionaries(days, window_tuples, max_size=5))
    manual = draw(st.dictionaries(days, window_tuples, max_size=5))
    return Availability(tuple(periods), exceptions, manual)


def inside(window: Window, wall: datetime) -> bool:
    """Whether the wall-clock quarter hour starting at ``wall`` fits in ``window``."""
    day = wall.date()
    stop = datetime.combine(day + ONE_DAY, time()) if window.end is None else datetime.combine(day, window.end)
    return datetime.combine(day, window.start) <= wall and wall + SLOT <= stop


def reference_slots(
    availability: Availability, tz: ZoneInfo, first: date, last: date
) -> list[tuple[datetime, datetime]]:
    """Slow, obvious version: every grid point, converted on its own."""
    found = set()
    for day in dates(first, last):
        for minute in range(0, 24 * 60, SLOT_MINUTES):
            wall = datetime.combine(day, time()) + timedelta(minutes=minute)
            if any(inside(window, wall) for window in windows_on(availability, day)):
                start = wall.replace(tzinfo=tz).astimezone(UTC)
                if start.astimezone(tz).replace(tzinfo=None) == wall:
                    found.add((start, start + SLOT))
    return sorted(found)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    availability=availabilities(),
    key=st.sampled_from(ZONES),
    first=days_in_play | st.sampled_from(TRANSITIONS).map(lambda day: day - 2 * ONE_DAY),
    length=st.integers(0, 20),
)
def test_generated_slots_are_on_grid_sorted_unique_and_inside_windows(
    availability: Availability, key: str, first: date, length: int
) -> None:
    tz = ZoneInfo(key)
    last = first + timedelta(days=length)
    slots = generate_slots(availability, tz, first, last)
    for start, end in slots:
        assert slot_on_grid(start)
        assert start.tzinfo is UTC
        assert end - start == SLOT
        local = start.astimezone(tz)
        assert local.fold == 0  # a repeated wall time is offered at its first occurrence
        wall = local.replace(tzinfo=None)
        assert first <= wall.date() <= last
        assert any(inside(window, wall) for window in windows_on(availability, wall.date()))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(slots))
    assert slots == reference_slots(availability, tz, first, last)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stored=availabilities(merge_days),
    posted=availabilities(merge_days),
    extra=st.sets(merge_days, max_size=4),
)
def test_merge_takes_posted_on_touched_dates_and_stored_elsewhere(
    stored: Availability, posted: Availability, extra: set[date]
) -> None:
    # Given touched dates as the API derives them, plus a few extra ones
    touched = set(extra) | set(posted.exceptions) | set(posted.manual)
    for period in posted.periods:
        touched.update(dates(period.start_date, period.end_date))
    # When merged
    merged = merge(stored, posted, touched)
    # Then every date reads exactly like posted (touched) or stored (untouched)
    for day in dates(date(2026, 12, 31), date(2027, 4, 1)):
        source = posted if day in touched else stored
        assert windows_on(merged, day) == windows_on(source, day), day
    # And stored periods were only cut at touched dates, into maximal pieces
    for piece in merged.periods:
        if piece in posted.periods:
            continue
        origin = next(
            period
            for period in stored.periods
            if period.start_date <= piece.start_date <= piece.end_date <= period.end_date
        )
        assert piece.windows == origin.windows
        assert not touched.intersection(dates(piece.start_date, piece.end_date))
        assert piece.start_date == origin.start_date or (piece.start_date - ONE_DAY in touched)
        assert piece.end_date == origin.end_date or piece.end_date + ONE_DAY in touched
    covered = {day for period in merged.periods for day in dates(period.start_date, period.end_date)}
    stored_days = {day for period in stored.periods for day in dates(period.start_date, period.end_date)}
    posted_days = {day for period in posted.periods for day in dates(period.start_date, period.end_date)}
    assert covered == (stored_days - touched) | posted_days


@pytest.mark.parametrize(
    ("key", "skipped"),
    [
        ("America/New_York", 4),
        ("Europe/London", 4),
        ("Australia/Lord_Howe", 2),
        ("Pacific/Chatham", 4),
        ("Asia/Kathmandu", 0),
        ("America/St_Johns", 4),
        ("America/Santiago", 4),
        ("America/Havana", 4),
        ("UTC", 0),
    ],
)
def test_every_quarter_hour_of_a_year_matches_the_slow_reference(key: str, skipped: int) -> None:
    # Given every quarter hour of every day of 2027
    tz = ZoneInfo(key)
    always = WeeklyWindow(frozenset(range(7)), Window(time(0), None))
    period = WeeklyPeriod(date(2027, 1, 1), date(2027, 12, 31), (always,))
    availability = Availability((period,), {}, {})
    # When generated in one go
    slots = generate_slots(availability, tz, date(2027, 1, 1), date(2027, 12, 31))
    # Then only wall times skipped by spring-forward are missing
    assert len(slots) == 365 * 96 - skipped
    # And it matches converting each slot on its own
    assert slots == reference_slots(availability, tz, date(2027, 1, 1), date(2027, 12, 31))
