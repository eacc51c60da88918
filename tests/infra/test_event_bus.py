"""The event path of template.yaml (as SAM turns it into CloudFormation): the custom bus,
the rule that sends every reservations event to an encrypted SQS queue with a dead-letter
queue, the events function that consumes it and runs the one-minute dispatch pass, and
who may publish, send to or read what.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from reservations.adapters.event_bus import EVENT_SOURCE
from reservations.config import Settings
from tests.infra import test_templates
from tests.infra.helpers import REPO, TEMPLATE

# The SAM-transformed template: test_templates' fixture itself, not a copy of it.
transformed = test_templates.transformed
source = test_templates.source
resources_of = test_templates.resources_of
statements_of = test_templates._statements

BUS_ARN = {"Fn::GetAtt": ["EventBus", "Arn"]}
QUEUE_ARN = {"Fn::GetAtt": ["EventsQueue", "Arn"]}
DEAD_LETTER_ARN = {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
RULE_ARN = {"Fn::GetAtt": ["EventsRule", "Arn"]}
FOURTEEN_DAYS = 14 * 24 * 3600
# What Lambda's SQS poller needs (ChangeMessageVisibility for the handler's own use).
QUEUE_CONSUMER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
}


def props(document: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = document["Resources"][name]["Properties"]
    return properties


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def function_roles(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Function logical id -> its role resource."""
    roles = resources_of(document, "AWS::IAM::Role")
    return {
        name: roles[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        for name, function in resources_of(document, "AWS::Lambda::Function").items()
    }


# --------------------------------------------------------------------------- bus and rule


def test_the_bus_is_the_stacks_own(transformed: dict[str, Any]) -> None:
    (name,) = resources_of(transformed, "AWS::Events::EventBus")
    assert name == "EventBus"
    assert props(transformed, "EventBus")["Name"] == {"Fn::Sub": "${AWS::StackName}-events"}
    outputs = transformed["Outputs"]
    assert outputs["EventBusName"]["Value"] == {"Ref": "EventBus"}
    assert outputs["EventBusArn"]["Value"] == BUS_ARN


def test_the_bus_rule_sends_every_reservations_event_whole_to_the_queue(transformed: dict[str, Any]) -> None:
    rule = props(transformed, "EventsRule")
    assert rule["EventBusName"] == {"Ref": "EventBus"}
    assert rule["State"] == "ENABLED"
    # The source the publisher sets on every entry (EventBridgeSink).
    assert rule["EventPattern"] == {"source": [EVENT_SOURCE]}
    (target,) = rule["Targets"]
    assert target["Arn"] == QUEUE_ARN
    # No input transformation: the consumer reads the EventBridge event's detail.
    assert not {"Input", "InputPath", "InputTransformer"} & set(target)
    # What EventBridge cannot deliver (after its retries) is parked, not dropped.
    assert target["DeadLetterConfig"] == {"Arn": DEAD_LETTER_ARN}
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0


def test_the_events_handler_reads_the_detail_of_the_queued_event() -> None:
    handler = (REPO / "functions" / "events" / "handler.py").read_text()
    assert 'json.loads(record["body"])' in handler and '["detail"]' in handler


# --------------------------------------------------------------------------- queues


def test_the_queue_parks_repeated_failures_in_a_dead_letter_queue(transformed: dict[str, Any]) -> None:
    queue, dead = props(transformed, "EventsQueue"), props(transformed, "EventsDeadLetterQueue")
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": DEAD_LETTER_ARN, "maxReceiveCount": 5}
    assert "RedrivePolicy" not in dead
    assert dead["MessageRetentionPeriod"] == FOURTEEN_DAYS
    # A moved message keeps its first enqueue time: the dead-letter queue must keep it longer.
    assert dead["MessageRetentionPeriod"] > queue.get("MessageRetentionPeriod", 4 * 24 * 3600)
    outputs = transformed["Outputs"]
    assert outputs["EventsDeadLetterQueueArn"]["Value"] == DEAD_LETTER_ARN


@pytest.mark.parametrize("queue", ["EventsQueue", "EventsDeadLetterQueue"])
def test_the_queues_are_encrypted_at_rest(transformed: dict[str, Any], queue: str) -> None:
    # SSE-SQS: EventBridge can send to it without a KMS key policy.
    assert props(transformed, queue)["SqsManagedSseEnabled"] is True
    assert "KmsMasterKeyId" not in props(transformed, queue)


def test_queue_visibility_covers_six_function_timeouts(transformed: dict[str, Any]) -> None:
    # AWS guidance for SQS event sources: a batch must not become visible again while a
    # throttled or retried invocation still holds it.
    timeout = props(transformed, "EventsFunction")["Timeout"]
    assert timeout == 120
    assert props(transformed, "EventsQueue")["VisibilityTimeout"] >= 6 * timeout


@pytest.mark.parametrize(("queue", "arn"), [("EventsQueue", QUEUE_ARN), ("EventsDeadLetterQueue", DEAD_LETTER_ARN)])
def test_only_the_rule_may_send_to_the_queues(transformed: dict[str, Any], queue: str, arn: Any) -> None:
    policies = [
        p["Properties"]
        for p in resources_of(transformed, "AWS::SQS::QueuePolicy").values()
        if {"Ref": queue} in p["Properties"]["Queues"]
    ]
    (policy,) = policies
    assert policy["Queues"] == [{"Ref": queue}]
    statements = policy["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert actions(allow) == ["sqs:SendMessage"]
    assert allow["Resource"] == arn
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": RULE_ARN}}
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == arn


def test_no_function_may_send_to_or_purge_the_queues(transformed: dict[str, Any]) -> None:
    for name, role in function_roles(transformed).items():
        for statement in statements_of(transformed, role):
            sqs = {a for a in actions(statement) if a.startswith("sqs:")}
            if not sqs:
                continue
            assert name == "EventsFunction", (name, statement)
            assert sqs == QUEUE_CONSUMER_ACTIONS
            assert statement["Resource"] == QUEUE_ARN  # not the dead-letter queue: redrive is an operator's act


# --------------------------------------------------------------------------- the events function


def test_events_function_consumes_the_queue_reporting_failed_items(transformed: dict[str, Any]) -> None:
    (mapping,) = resources_of(transformed, "AWS::Lambda::EventSourceMapping").values()
    source_mapping = mapping["Properties"]
    assert source_mapping["FunctionName"] == {"Ref": "EventsFunction"}
    assert source_mapping["EventSourceArn"] == QUEUE_ARN
    assert source_mapping["BatchSize"] == 10
    assert source_mapping["MaximumBatchingWindowInSeconds"] == 1
    # Without it, one failed event would send the whole batch back (and to the DLQ).
    assert source_mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    handler = (REPO / "functions" / "events" / "handler.py").read_text()
    assert '"batchItemFailures"' in handler and '"itemIdentifier"' in handler


def test_events_function_runs_the_dispatch_pass_every_minute_without_async_retries(
    transformed: dict[str, Any], source: dict[str, Any]
) -> None:
    assert test_templates.schedules(transformed)["EventsFunction"] == ["rate(1 minute)"]
    # A failed pass is not retried minutes later on top of the next ones.
    (config,) = [
        c["Properties"]
        for c in resources_of(transformed, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": "EventsFunction"}
    ]
    assert config["MaximumRetryAttempts"] == 0
    # The local gateway (make dev) runs the same pass from the template's schedule.
    from reservations_dev.template import load_schedules

    (dispatch,) = [s for s in load_schedules(TEMPLATE) if s.function_name == "EventsFunction"]
    assert dispatch.interval_seconds == 60
    assert source["Resources"]["EventsFunction"]["Properties"]["CodeUri"] == "functions/events/"


def test_events_function_has_its_own_role_and_log_group(transformed: dict[str, Any]) -> None:
    function = props(transformed, "EventsFunction")
    assert function["Role"] == {"Fn::GetAtt": ["EventsFunctionRole", "Arn"]}
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "EventsLogGroup"}}
    role = props(transformed, "EventsFunctionRole")
    (logs,) = [s for p in role["Policies"] if p["PolicyName"] == "logs" for s in p["PolicyDocument"]["Statement"]]
    assert logs["Resource"] == {"Fn::GetAtt": ["EventsLogGroup", "Arn"]}
    assert props(transformed, "EventsLogGroup")["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AWS::StackName}/events"}


# --------------------------------------------------------------------------- publishing


def test_functions_may_put_events_only_on_the_bus_with_the_reservations_source(transformed: dict[str, Any]) -> None:
    publishers = set()
    for name, role in function_roles(transformed).items():
        for statement in statements_of(transformed, role):
            events = [a for a in actions(statement) if a.startswith("events:")]
            if not events:
                continue
            publishers.add(name)
            assert events == ["events:PutEvents"], (name, statement)
            assert statement["Resource"] == BUS_ARN, (name, statement)
            assert statement["Condition"] == {"StringEquals": {"events:source": EVENT_SOURCE}}, name
    assert publishers == set(test_templates.PUBLISHERS)
    # One managed policy, attached unconditionally to each publisher's role.
    roles = function_roles(transformed)
    for name in test_templates.PUBLISHERS:
        assert {"Ref": "PublishEventsPolicy"} in roles[name]["Properties"]["ManagedPolicyArns"], name


def test_publishers_are_told_the_bus_and_the_events_function_the_retention(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    for name in test_templates.PUBLISHERS:
        variables = functions[name]["Properties"]["Environment"]["Variables"]
        assert variables["EVENT_BUS_NAME"] == {"Ref": "EventBus"}, name  # Ref of a bus is its name
        assert variables["REMINDER_HOURS_BEFORE"] == {"Ref": "ReminderHoursBefore"}, name
    events = functions["EventsFunction"]["Properties"]["Environment"]["Variables"]
    assert events["OUTBOX_RETENTION_DAYS"] == {"Ref": "OutboxRetentionDays"}


def test_every_variable_the_template_sets_is_a_setting_the_code_reads(transformed: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name, function in resources_of(transformed, "AWS::Lambda::Function").items():
        for variable in function["Properties"]["Environment"]["Variables"]:
            assert variable.lower() in fields or variable.startswith("POWERTOOLS_"), (name, variable)


# --------------------------------------------------------------------------- parameters


def _settings_accept(**values: Any) -> bool:
    try:
        Settings(_env_file=None, app_env="test", jwt_secret_key="k" * 64, **values)
    except ValidationError:
        return False
    return True


def test_reminder_hours_pattern_accepts_only_what_the_settings_accept(source: dict[str, Any]) -> None:
    parameter = source["Parameters"]["ReminderHoursBefore"]
    # CloudFormation matches AllowedPattern against the whole value.
    pattern = re.compile(parameter["AllowedPattern"])
    assert parameter["Type"] == "String"
    assert pattern.fullmatch(parameter["Default"]) and parameter["Default"] == "24"
    for value in ("24", "48,2", "72,24,1", "720", "1"):
        assert pattern.fullmatch(value), value
    for value in ("", "0", "721", "24,", ",24", "1.5", "24;2", "-1", "abc", "24,0"):
        assert not pattern.fullmatch(value), value
    # For every whole number the template and the settings agree.
    for hours in range(0, 800):
        assert bool(pattern.fullmatch(str(hours))) == _settings_accept(reminder_hours_before=str(hours)), hours
    for value in ("24", "48,2", "72,24,1"):
        assert _settings_accept(reminder_hours_before=value), value


def test_outbox_retention_bounds_are_the_settings_bounds(source: dict[str, Any]) -> None:
    parameter = source["Parameters"]["OutboxRetentionDays"]
    assert parameter["Type"] == "Number"
    field = Settings.model_fields["outbox_retention_days"]
    assert parameter["Default"] == field.default == 7
    bounds = {type(m).__name__: m for m in field.metadata}
    assert parameter["MinValue"] == bounds["Ge"].ge
    assert parameter["MaxValue"] == bounds["Le"].le
    assert _settings_accept(outbox_retention_days=parameter["MinValue"])
    assert not _settings_accept(outbox_retention_days=parameter["MaxValue"] + 1)


# --------------------------------------------------------------------------- integrations


def test_integrations_function_outlasts_one_webhook_post(transformed: dict[str, Any]) -> None:
    # Ping and retry POST to the customer's endpoint inside the request.
    function = props(transformed, "IntegrationsFunction")
    webhook_timeout = Settings.model_fields["webhook_timeout_seconds"].default
    assert webhook_timeout * 2 < function["Timeout"] < test_templates.API_GATEWAY_TIMEOUT_SECONDS
    assert function["Role"] == {"Fn::GetAtt": ["IntegrationsFunctionRole", "Arn"]}
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "IntegrationsLogGroup"}}
    assert json.dumps(props(transformed, "IntegrationsFunctionRole")).count("IntegrationsLogGroup") == 1
