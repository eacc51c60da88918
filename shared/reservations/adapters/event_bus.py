"""Where published events go: an EventBridge custom bus on AWS, or straight to the
in-process consumer when no bus is configured (`make dev`, the tests)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# PutEvents takes at most 10 entries and 256 KiB per call.
PUT_EVENTS_MAX_ENTRIES = 10
PUT_EVENTS_MAX_BYTES = 256 * 1024
EVENT_SOURCE = "reservations"

Event = Mapping[str, Any]


class EventSink(Protocol):
    def send(self, events: Sequence[Event], session: Session) -> set[str]:
        """Send ``events``; return the ids that were accepted (the rest stay unpublished).
        ``session`` is the publisher's transaction, which marks them published."""
        ...


class EventBridgeSink:
    """PutEvents in batches; only entries EventBridge accepted count as sent, so a
    partial failure resends just the failed ones on the next pass."""

    def __init__(self, client: Any, bus_name: str, *, source: str = EVENT_SOURCE) -> None:
        self._client = client
        self._bus_name = bus_name
        self._source = source

    def _entry(self, event: Event) -> dict[str, Any]:
        return {
            "Source": self._source,
            "DetailType": str(event["type"]),
            "Detail": json.dumps(event, separators=(",", ":")),
            "EventBusName": self._bus_name,
        }

    def send(self, events: Sequence[Event], session: Session) -> set[str]:
        accepted: set[str] = set()
        for batch in _batches([(str(e["id"]), self._entry(e)) for e in events]):
            response = self._client.put_events(Entries=[entry for _, entry in batch])
            for (event_id, _), result in zip(batch, response.get("Entries", []), strict=False):
                if result.get("EventId") and not result.get("ErrorCode"):
                    accepted.add(event_id)
                else:
                    logger.warning("EventBridge refused event %s: %s", event_id, result.get("ErrorCode"))
        return accepted


def _batches(entries: list[tuple[str, dict[str, Any]]]) -> list[list[tuple[str, dict[str, Any]]]]:
    batches: list[list[tuple[str, dict[str, Any]]]] = []
    current: list[tuple[str, dict[str, Any]]] = []
    size = 0
    for item in entries:
        entry_size = len(item[1]["Detail"]) + len(item[1]["DetailType"]) + len(item[1]["Source"])
        if current and (len(current) == PUT_EVENTS_MAX_ENTRIES or size + entry_size > PUT_EVENTS_MAX_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += entry_size
    if current:
        batches.append(current)
    return batches


class InProcessSink:
    """No bus: the consumer (what the bus, its rule, the queue and the events function do
    on AWS) runs in the publisher's own transaction, so consuming and marking commit
    together, and a publisher never needs a second connection while it holds one."""

    def __init__(self, consume: Callable[[Session, Event], None]) -> None:
        self._consume = consume

    def send(self, events: Sequence[Event], session: Session) -> set[str]:
        for event in events:
            self._consume(session, event)
        return {str(e["id"]) for e in events}
