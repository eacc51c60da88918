"""Redis cache of computed slot days, which can be missing or late but never wrong.

Each value is one provider-local day under `provider:{id}:timeslots:{YYYY-MM-DD}`,
tagged with that day's tag: the provider's `slots_version` (bumped when all of its days
change, i.e. a new time zone) and the day's row in `slot_day_versions` (bumped by every
reservation change or availability post that can affect that day), as
"{slots_version}:{day version}". Both live in Postgres and are bumped in the same
transaction as the write, so a value computed from older data (including the slow-reader
race: compute, invalidate, then write back) carries an older tag and reads as a miss,
while a write leaves the cached values of days it cannot affect untouched. No
invalidation message has to reach Redis for the cache to be right, which is why a Redis
outage during a write cannot leave a stale value behind.

Redis failures never fail a request: timeouts are short, there are no retries, and
after a failure Redis is skipped for `circuit_seconds` (a circuit breaker), logged
once per period and counted.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reservations.domain.scheduling import Busy, DayRequest, DaySlots

logger = logging.getLogger(__name__)

KEY_PATTERN = "provider:*:timeslots:*"
CONNECT_TIMEOUT_SECONDS = 0.1
READ_TIMEOUT_SECONDS = 0.2
CIRCUIT_SECONDS = 30.0


def day_key(provider_id: int, day: date) -> str:
    return f"provider:{provider_id}:timeslots:{day.isoformat()}"


def parse_key(key: str) -> tuple[int, date] | None:
    parts = key.split(":")
    if len(parts) != 4 or parts[0] != "provider" or parts[2] != "timeslots":
        return None
    try:
        return int(parts[1]), date.fromisoformat(parts[3])
    except ValueError:
        return None


def encode_day(day: DaySlots, tag: str) -> str:
    """Offered slot starts and busy ranges as epoch seconds: ``busy`` holds
    [start, end, until or null, 1 if it counts towards the day's cap else 0]."""
    return json.dumps(
        {
            "version": tag,
            "starts": [int(start.timestamp()) for start in day.starts],
            "busy": [
                [
                    int(entry.start.timestamp()),
                    int(entry.end.timestamp()),
                    int(entry.until.timestamp()) if entry.until else None,
                    int(entry.on_day),
                ]
                for entry in day.busy
            ],
        },
        separators=(",", ":"),
    )


# Slot starts repeat across days' values and providers (one 15-minute grid), and turning
# an epoch into a datetime costs several times a dict lookup: a search decodes 50
# providers x 7 days x ~48 starts per request. Bounded: cleared when full.
_INSTANTS: dict[int, datetime] = {}
_INSTANT_MEMO_SIZE = 200_000


def _instant(value: Any) -> datetime:
    seconds = int(value)
    found = _INSTANTS.get(seconds)
    if found is None:
        if len(_INSTANTS) >= _INSTANT_MEMO_SIZE:
            _INSTANTS.clear()
        found = _INSTANTS[seconds] = datetime.fromtimestamp(seconds, UTC)
    return found


def decode_day(raw: str | bytes, day: date) -> tuple[str, DaySlots]:
    """The tag and the day. Raises ValueError on anything malformed, whatever the malformation."""
    try:
        document = json.loads(raw)
        tag = document["version"]
        if not isinstance(tag, str):
            raise TypeError("the tag is not a string")
        if not (isinstance(document["starts"], list) and isinstance(document["busy"], list)):
            raise TypeError("starts and busy must be lists")
        starts = tuple(_instant(value) for value in document["starts"])
        busy = tuple(
            Busy(_instant(start), _instant(end), _instant(until) if until is not None else None, bool(on_day))
            for start, end, until, on_day in document["busy"]
        )
        return tag, DaySlots(day, starts, busy)
    except Exception as error:
        # Garbage can fail in many ways: `busy` as a mapping (ValueError on unpacking), a
        # timestamp past time_t (OverflowError, or OSError on Linux), ... All are a miss.
        raise ValueError(f"malformed cached day {day.isoformat()}: {type(error).__name__}") from error


# A warm container reads the same days again and again (each listing and search of a
# provider); decoding one costs JSON parsing and ~48 instants, and a 50-provider search
# decodes 350. Days are immutable and remembered by the exact bytes stored, so a remembered
# day is never stale: a changed day is different bytes (and a different tag). Bounded (LRU).
DECODED_DAYS_MEMO = 2048


@functools.lru_cache(maxsize=DECODED_DAYS_MEMO)
def _decoded(raw: str | bytes, day: date) -> tuple[str, DaySlots]:
    return decode_day(raw, day)


class CircuitBreaker:
    """Skip a failing dependency for a while instead of paying its timeout per request."""

    def __init__(
        self,
        *,
        open_seconds: float,
        on_open: Callable[[BaseException], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open_seconds = open_seconds
        self.on_open = on_open
        self.clock = clock
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def record_failure(self, error: BaseException) -> None:
        with self._lock:
            already_open = self.is_open
            self._open_until = self.clock() + self.open_seconds
        if not already_open:
            try:
                self.on_open(error)
            except Exception:  # reporting an outage must never turn it into a failed request
                logger.exception("outage hook failed")


class SlotCache:
    """A `DayStore` backed by Redis. Every method swallows Redis errors (a miss)."""

    def __init__(self, client: redis.Redis, *, ttl_seconds: int, breaker: CircuitBreaker) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.breaker = breaker
        self.failures = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl_seconds: int,
        on_open: Callable[[BaseException], None] | None = None,
        circuit_seconds: float = CIRCUIT_SECONDS,
        credential_provider: Any = None,
    ) -> SlotCache:
        # redis-py's defaults (5 s timeouts, 3 retries) would stall a request for many
        # seconds when Redis hangs; fail fast instead and fall back to Postgres.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=READ_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            credential_provider=credential_provider,
        )
        breaker = CircuitBreaker(
            open_seconds=circuit_seconds, on_open=on_open or functools.partial(_log_outage, seconds=circuit_seconds)
        )
        return cls(client, ttl_seconds=ttl_seconds, breaker=breaker)

    def _guarded(self, operation: Callable[[], Any], default: Any) -> Any:
        if self.breaker.is_open:
            return default
        try:
            return operation()
        except (redis.RedisError, OSError) as error:
            self.failures += 1
            self.breaker.record_failure(error)
            return default

    # --- DayStore -------------------------------------------------------------------

    def get_days(self, provider_id: int, days: Sequence[date], tags: Mapping[date, str]) -> dict[date, DaySlots]:
        if not days:
            return {}
        raw_values = self._guarded(lambda: self._get_many([day_key(provider_id, d) for d in days]), None)
        if raw_values is None:
            return {}
        found: dict[date, DaySlots] = {}
        for day, raw in zip(days, raw_values, strict=True):
            value = self._current(raw, day, tags)
            if value is not None:
                found[day] = value
        return found

    def get_many(self, requests: Mapping[int, DayRequest]) -> dict[int, dict[date, DaySlots]]:
        """`get_days` of several providers in one pipelined round trip."""
        wanted = [(provider_id, day, tags) for provider_id, (days, tags) in requests.items() for day in days]
        if not wanted:
            return {}
        raw_values = self._guarded(lambda: self._get_many([day_key(p, d) for p, d, _ in wanted]), None)
        found: dict[int, dict[date, DaySlots]] = {provider_id: {} for provider_id in requests}
        if raw_values is None:
            return found
        for (provider_id, day, tags), raw in zip(wanted, raw_values, strict=True):
            value = self._current(raw, day, tags)
            if value is not None:
                found[provider_id][day] = value
        return found

    @staticmethod
    def _current(raw: Any, day: date, tags: Mapping[date, str]) -> DaySlots | None:
        if raw is None:
            return None
        try:
            cached_tag, value = _decoded(raw, day)
        except (ValueError, KeyError, TypeError):
            return None  # a corrupt value is a miss; the sync pass repairs it
        return value if cached_tag == tags.get(day) else None

    def put_days(self, provider_id: int, days: Sequence[DaySlots], tags: Mapping[date, str]) -> None:
        if not days:
            return

        def write() -> None:
            pipeline = self.client.pipeline(transaction=False)
            for day in days:
                pipeline.set(day_key(provider_id, day.day), encode_day(day, tags[day.day]), ex=self.ttl_seconds)
            pipeline.execute()

        self._guarded(write, None)

    # --- sync support ---------------------------------------------------------------

    def scan_keys(self, batch: int = 500) -> Iterator[str]:
        """Every slot-day key (raises on Redis errors: the sync pass reports them)."""
        for key in self.client.scan_iter(match=KEY_PATTERN, count=batch):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def raw(self, keys: Sequence[str]) -> list[Any]:
        return self._get_many(keys)

    def _get_many(self, keys: Sequence[str]) -> list[Any]:
        """GETs in one pipelined round trip rather than MGET: the day keys of a provider
        hash to different cluster slots, and cluster-mode Redis (ElastiCache Serverless
        only runs that way) refuses a multi-key command across slots with CROSSSLOT."""
        pipeline = self.client.pipeline(transaction=False)
        for key in keys:
            pipeline.get(key)
        return list(pipeline.execute())

    def overwrite(self, provider_id: int, day: DaySlots, tag: str) -> None:
        self.client.set(day_key(provider_id, day.day), encode_day(day, tag), ex=self.ttl_seconds)

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.delete(*keys)


def _log_outage(error: BaseException, *, seconds: float = CIRCUIT_SECONDS) -> None:
    logger.warning(
        "Redis unavailable (%s: %s); serving slots from Postgres and retrying Redis in %.0f s",
        type(error).__name__,
        error,
        seconds,
    )
