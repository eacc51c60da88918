"""cache_sync function: the EventBridge-scheduled housekeeping pass."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from reservations.http.runtime import Runtime, booking_policy
from reservations.scheduling import NoStore
from reservations.slot_cache import SlotCache
from reservations.sync import run_sync_pass

logger = Logger(service="reservations")
metrics = Metrics(namespace="Reservations", service="reservations")
tracer = Tracer(service="reservations")
runtime = Runtime()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.append_keys(trigger=event.get("detail-type", "manual"), event_time=event.get("time"))
    store = runtime.day_store
    cache = store if isinstance(store, SlotCache) and not isinstance(store, NoStore) else None
    summary = run_sync_pass(runtime.transaction, cache, policy=booking_policy(runtime.settings), now=runtime.now())
    metrics.add_metric(name="ExpiredHolds", unit=MetricUnit.Count, value=summary.expired_holds)
    metrics.add_metric(name="CacheKeysChecked", unit=MetricUnit.Count, value=summary.keys_checked)
    metrics.add_metric(name="CacheKeysRepaired", unit=MetricUnit.Count, value=summary.keys_repaired)
    metrics.add_metric(name="SyncDuration", unit=MetricUnit.Milliseconds, value=summary.duration_ms)
    logger.info("sync pass finished", extra=summary.as_dict())
    return summary.as_dict()
