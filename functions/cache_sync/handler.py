"""cache_sync function: the EventBridge-scheduled housekeeping pass."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from reservations.composition import Container
from reservations.http.lambda_entry import powertools

container = Container()
logger, metrics, tracer = powertools(container.settings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.append_keys(trigger=event.get("detail-type", "manual"), event_time=event.get("time"))
    summary = container.housekeeping.sync_pass()
    metrics.add_metric(name="ExpiredHolds", unit=MetricUnit.Count, value=summary.expired_holds)
    metrics.add_metric(name="Expiries", unit=MetricUnit.Count, value=summary.expired_holds)
    metrics.add_metric(name="CacheKeysChecked", unit=MetricUnit.Count, value=summary.keys_checked)
    metrics.add_metric(name="CacheKeysRepaired", unit=MetricUnit.Count, value=summary.keys_repaired)
    metrics.add_metric(name="SyncDuration", unit=MetricUnit.Milliseconds, value=summary.duration_ms)
    logger.info("sync pass finished", extra=summary.as_dict())
    return summary.as_dict()
