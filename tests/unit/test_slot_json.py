"""The listing's hand-written JSON is what pydantic writes for `list[SlotOut]`."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter

from reservations.http.booking_schemas import SlotOut
from reservations.http.slot_json import slots_json

SLOTS = TypeAdapter(list[SlotOut])
START = dt.datetime(2027, 1, 8, 13, 0, tzinfo=dt.UTC)


def pydantic_json(provider_id: int, visit_type_id: int, slots: list[tuple[dt.datetime, dt.datetime]]) -> bytes:
    models = [
        SlotOut(provider_id=provider_id, visit_type_id=visit_type_id, start_time=start, end_time=end)
        for start, end in slots
    ]
    return SLOTS.dump_json(models)


def test_the_listing_json_is_pydantics_byte_for_byte() -> None:
    slots = [
        (START, START + dt.timedelta(minutes=30)),
        (START + dt.timedelta(hours=1, seconds=7, microseconds=5), START + dt.timedelta(hours=2)),
        # Another offset (never produced by the domain, which works in UTC) keeps its offset.
        (START.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))), START + dt.timedelta(hours=3)),
        (START.astimezone(ZoneInfo("Europe/London")), START.astimezone(ZoneInfo("UTC"))),
    ]
    for provider_id, visit_type_id, listed in [(1, 2, slots), (922337203685477580, 9, slots[:1]), (3, 4, [])]:
        assert slots_json(provider_id, visit_type_id, listed) == pydantic_json(provider_id, visit_type_id, listed)


def test_a_slot_time_is_written_the_same_once_remembered() -> None:
    slots = [(START, START + dt.timedelta(minutes=15))]
    assert slots_json(5, 6, slots) == slots_json(5, 6, slots) == pydantic_json(5, 6, slots)
