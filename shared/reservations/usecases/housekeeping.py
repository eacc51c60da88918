"""The scheduled housekeeping pass: expire stale holds, reconcile the slot cache.

Correctness never depends on it (reservations expire holds lazily and cached values are
version-tagged); it keeps the table tidy and repairs cache values that differ from
Postgres for any reason (a bug, a manual edit, a partial write)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import CursorResult, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import User
from reservations.adapters.slot_cache import SlotCache, decode_day, encode_day, parse_key
from reservations.domain.policy import BookingPolicy
from reservations.domain.scheduling import NoStore, ProviderSchedule, bump_slot_days, day_tags, days_spanned
from reservations.usecases import Resources

EXPIRY_BATCH = 500
SCAN_BATCH = 500

# Compare-and-set: only the pass that still sees the bad value rewrites (and counts) it.
_REPLACE_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
  return 1
end
return 0
"""


@dataclass
class SyncSummary:
    expired_holds: int = 0
    keys_checked: int = 0
    keys_repaired: int = 0
    keys_stale: int = 0
    rows_purged: int = 0
    appointments_purged: int = 0
    audit_entries_purged: int = 0
    cache_available: bool = True
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Transaction = Callable[[], AbstractContextManager[Session]]

# Rows past their use: idempotency records after 24 h, login failures after a day (the
# lockout window is minutes), refresh tokens once expired, reset tokens a day after expiry.
_PURGES = (
    ("idempotency_records", "created_at <= CAST(:now AS timestamptz) - interval '24 hours'"),
    ("login_failures", "failed_at <= CAST(:now AS timestamptz) - interval '1 day'"),
    ("refresh_tokens", "expires_at <= CAST(:now AS timestamptz)"),
    ("password_reset_tokens", "expires_at <= CAST(:now AS timestamptz) - interval '1 day'"),
    ("password_reset_requests", "requested_at <= CAST(:now AS timestamptz) - interval '1 day'"),
    ("email_verification_tokens", "expires_at <= CAST(:now AS timestamptz) - interval '1 day'"),
)
PURGE_BATCH = 5000
PURGE_MAX_BATCHES = 20


def purge_expired_rows(transaction: Transaction, now: datetime) -> int:
    """Keep tables that clients can grow (e.g. failed logins for made-up e-mails) bounded,
    in short batches so a pass never holds long locks."""
    total = 0
    for table, condition in _PURGES:
        for _ in range(PURGE_MAX_BATCHES):
            with transaction() as session:
                result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                    text(
                        f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {condition} LIMIT :batch)"
                    ),
                    {"now": now, "batch": PURGE_BATCH},
                )
                deleted = result.rowcount
            total += deleted
            if deleted < PURGE_BATCH:
                break
    return total


def expire_stale_holds(transaction: Transaction, now: datetime, *, batch: int = EXPIRY_BATCH) -> int:
    """Mark holds past their deadline expired, in batches that skip rows other
    transactions hold, so concurrent passes neither wait on nor double-count each other."""
    total = 0
    while True:
        with transaction() as session:
            expired = session.execute(
                text(
                    """
                    WITH expired AS (
                        UPDATE appointments SET status = 'expired', updated_at = :now
                        WHERE id IN (
                            SELECT id FROM appointments
                            WHERE status = 'reserved' AND expires_at <= :now
                            ORDER BY id LIMIT :batch
                            FOR UPDATE SKIP LOCKED)
                        RETURNING id, provider_id, busy_start, busy_end
                    ), recorded AS (
                        INSERT INTO appointment_history (appointment_id, at, from_status, to_status, actor_role)
                        SELECT id, :now, 'reserved', 'expired', 'system' FROM expired
                    )
                    SELECT provider_id, busy_start, busy_end FROM expired
                    """
                ),
                {"now": now, "batch": batch},
            ).all()
            days_by_provider: dict[int, set[date]] = defaultdict(set)
            for provider_id, busy_start, busy_end in expired:
                days_by_provider[provider_id].update(days_spanned(busy_start, busy_end))
            # Last, and providers in ascending order (days ascending within each): version
            # rows are always locked in one order, after the appointment rows.
            for provider_id in sorted(days_by_provider):
                bump_slot_days(session, provider_id, days_by_provider[provider_id])
        total += len(expired)
        if len(expired) < batch:
            return total


def _key_batches(cache: SlotCache) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in cache.scan_keys(SCAN_BATCH):
        batch.append(key)
        if len(batch) >= SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def reconcile_cache(
    cache: SlotCache, transaction: Transaction, *, policy: BookingPolicy, now: datetime, summary: SyncSummary
) -> None:
    replace = cache.client.register_script(_REPLACE_IF_UNCHANGED)
    for keys in _key_batches(cache):
        raw_values = cache.raw(keys)
        by_provider: dict[int, list[tuple[str, date, Any]]] = defaultdict(list)
        for key, raw in zip(keys, raw_values, strict=True):
            parsed = parse_key(key)
            if parsed is None or raw is None:
                continue
            by_provider[parsed[0]].append((key, parsed[1], raw))
        summary.keys_checked += sum(len(entries) for entries in by_provider.values())
        with transaction() as session:
            schedule = ProviderSchedule(session, policy=policy, now=now)
            for provider_id, entries in by_provider.items():
                provider = session.scalars(select(User).where(User.id == provider_id, User.role == "provider")).first()
                if provider is None:
                    for key, _, raw in entries:
                        summary.keys_repaired += int(replace(keys=[key], args=[raw, "", 0]))
                    continue
                days = [day for _, day, _ in entries]
                # Tags before data, as in `free_slots`: a write in between only makes the
                # repaired value a miss.
                tags = day_tags(session, provider, days)
                fresh = {d.day: d for d in schedule.compute_days(provider, days)}
                for key, day, raw in entries:
                    try:
                        tag, cached = decode_day(raw, day)
                    except (ValueError, KeyError, TypeError):
                        tag, cached = tags[day], None
                    if tag != tags[day]:
                        summary.keys_stale += 1  # unreadable already (a miss); expires by TTL
                        continue
                    correct = encode_day(fresh[day], tag)
                    if cached is None or encode_day(cached, tag) != correct:
                        summary.keys_repaired += int(replace(keys=[key], args=[raw, correct, cache.ttl_seconds]))


def run_sync_pass(
    transaction: Transaction, cache: SlotCache | None, *, policy: BookingPolicy, now: datetime
) -> SyncSummary:
    started = time.perf_counter()
    summary = SyncSummary()
    summary.expired_holds = expire_stale_holds(transaction, now)
    summary.rows_purged = purge_expired_rows(transaction, now)
    if cache is None:
        summary.cache_available = False
    else:
        try:
            reconcile_cache(cache, transaction, policy=policy, now=now, summary=summary)
        except (redis.RedisError, OSError):
            summary.cache_available = False
    summary.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return summary


class HousekeepingUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def sync_pass(self) -> SyncSummary:
        """One pass of the scheduled function: expire holds, purge spent rows, reconcile
        the cache (skipped, and reported, when there is none)."""
        r = self._resources
        store = r.day_store
        cache = store if isinstance(store, SlotCache) and not isinstance(store, NoStore) else None
        summary = run_sync_pass(r.unit_of_work, cache, policy=r.booking_policy, now=r.now())
        settings = r.settings
        audit_days = settings.audit_retention_days or settings.retention_days
        summary.appointments_purged = purge_in_batches(
            r.unit_of_work, "purge_appointments", r.now() - timedelta(days=settings.retention_days)
        )
        summary.audit_entries_purged = purge_in_batches(
            r.unit_of_work, "audit_purge", r.now() - timedelta(days=audit_days)
        )
        return summary


def purge_in_batches(transaction: Transaction, function: str, cutoff: datetime) -> int:
    """Retention through the owner's functions (migration 0007): the API's role may not
    delete audit entries or appointment histories itself. Short transactions, bounded."""
    total = 0
    for _ in range(PURGE_MAX_BATCHES):
        with transaction() as session:
            purged = int(
                session.execute(
                    text(f"SELECT {function}(:cutoff, :batch)"), {"cutoff": cutoff, "batch": PURGE_BATCH}
                ).scalar_one()
            )
        total += purged
        if purged < PURGE_BATCH:
            break
    return total
