"""events function: consumes the bus (EventBridge rule -> SQS -> here) and runs the
one-minute dispatch pass (publish the outbox, queue due reminders, attempt due webhook
deliveries, send queued mail, purge)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from reservations.composition import Container
from reservations.http.lambda_entry import powertools

container = Container()
logger, metrics, tracer = powertools(container.settings)
# After a batch, deliveries that fail are retried within this invocation while their
# first retry (5 s) falls inside this window; later retries are the schedule's.
LINGER_SECONDS = 10.0


def _consume_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    """SQS records carrying EventBridge events; a record that fails is reported alone, so
    SQS redelivers only it (and, after maxReceiveCount, parks it in the dead-letter queue)."""
    failures = []
    for record in records:
        try:
            envelope = json.loads(record["body"])
            container.events.consume(envelope["detail"])
        except Exception:
            logger.exception("event not consumed", extra={"message_id": record.get("messageId")})
            failures.append({"itemIdentifier": record["messageId"]})
    metrics.add_metric(name="EventsConsumed", unit=MetricUnit.Count, value=len(records) - len(failures))
    container.events.linger(LINGER_SECONDS)
    container.events.send_due_mail()
    return {"batchItemFailures": failures}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "Records" in event:
        return _consume_batch(event["Records"])
    logger.append_keys(trigger=event.get("detail-type", "manual"), event_time=event.get("time"))
    summary = container.events.dispatch_pass()
    metrics.add_metric(name="EventsPublished", unit=MetricUnit.Count, value=summary.published)
    metrics.add_metric(name="OutboxLagSeconds", unit=MetricUnit.Seconds, value=summary.oldest_unpublished_seconds)
    metrics.add_metric(name="RemindersQueued", unit=MetricUnit.Count, value=summary.reminders_queued)
    metrics.add_metric(name="WebhookAttempts", unit=MetricUnit.Count, value=summary.deliveries_attempted)
    failed = summary.deliveries_attempted - summary.deliveries_succeeded
    metrics.add_metric(name="WebhookFailures", unit=MetricUnit.Count, value=failed)
    metrics.add_metric(name="MailSent", unit=MetricUnit.Count, value=summary.mail_sent)
    busy = any(value for key, value in summary.as_dict().items() if key != "oldest_unpublished_seconds")
    # Every minute on AWS, every 2 s under make dev: a quiet pass is a debug line.
    (logger.info if busy else logger.debug)("dispatch pass finished", extra=summary.as_dict())
    return summary.as_dict()
