"""The connection's date and timestamp readers answer what pg8000's own parsers answer,
for every form Postgres writes them in (ISO DateStyle), in any session time zone."""

from __future__ import annotations

import pytest
from pg8000.converters import date_in, timestamp_in, timestamptz_in

from reservations.adapters.pg_pipeline import read_date, read_timestamp, read_timestamptz

TIMESTAMPTZ = [
    "2027-06-01 12:00:00+00",
    "2027-06-01 12:00:00.5+00",
    "2027-06-01 12:00:00.123456+00",
    "2027-06-01 12:00:00.1234+05:30",
    "2027-03-14 01:59:59.999999-04",
    "1970-01-01 00:00:00+00",
    "0999-01-01 00:00:00+00",
    "infinity",
    "-infinity",
    "10000-01-01 00:00:00+00",  # past datetime's range: pg8000 gives the text back
]
TIMESTAMP = ["2027-06-01 12:00:00", "2027-06-01 12:00:00.000001", "infinity", "-infinity", "10000-01-01 00:00:00"]
DATE = ["2027-06-01", "0001-01-01", "9999-12-31", "infinity", "-infinity", "10000-01-01", "0044-03-15 BC"]


@pytest.mark.parametrize("text", TIMESTAMPTZ)
def test_timestamptz(text: str) -> None:
    assert read_timestamptz(text) == timestamptz_in(text)


@pytest.mark.parametrize("text", TIMESTAMP)
def test_timestamp(text: str) -> None:
    assert read_timestamp(text) == timestamp_in(text)


@pytest.mark.parametrize("text", DATE)
def test_date(text: str) -> None:
    assert read_date(text) == date_in(text)
