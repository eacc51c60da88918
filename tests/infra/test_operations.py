"""Operations: the alarms and the dashboard of template.yaml (as SAM turns it into
CloudFormation) and of infra/data-stack.yaml, and every custom metric they name being
emitted by the code - an alarm on a metric nobody publishes never fires.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reservations_dev.template import load_template
from tests.infra import test_templates
from tests.infra.helpers import DATA_STACK, REPO

# The SAM-transformed template: test_templates' fixture itself, not a copy of it.
transformed = test_templates.transformed
resources_of = test_templates.resources_of

API_FUNCTIONS = test_templates.API_FUNCTIONS
ALARM_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
CODE_FOLDERS = (REPO / "shared", REPO / "functions")
# Metrics Powertools publishes by itself when a handler asks for them.
POWERTOOLS_METRICS = {"capture_cold_start_metric": "ColdStart"}
SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


# --------------------------------------------------------------------------- helpers


def namespace(document: dict[str, Any]) -> str:
    """The functions' POWERTOOLS_METRICS_NAMESPACE: the one namespace of custom metrics."""
    names = {
        f["Properties"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
        for f in resources_of(document, "AWS::Lambda::Function").values()
    }
    assert len(names) == 1, names
    (name,) = names
    assert isinstance(name, str)
    return name


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric an alarm reads: {Namespace, MetricName, Dimensions, Stat}."""
    props = alarm["Properties"]
    if "MetricName" in props:
        stat = props.get("ExtendedStatistic") or props.get("Statistic")
        return [
            {**{k: props.get(k) for k in ("Namespace", "MetricName")}, "Dimensions": props.get("Dimensions", [])}
            | {"Stat": stat, "Period": props["Period"]}
        ]
    found = []
    for query in props["Metrics"]:
        if "MetricStat" in query:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            found.append(
                {**metric, "Dimensions": metric.get("Dimensions", []), "Stat": stat["Stat"], "Period": stat["Period"]}
            )
    return found


def dimensions(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric["Dimensions"]}


def alarms_on(document: dict[str, Any], metric_name: str, **dims: Any) -> dict[str, dict[str, Any]]:
    return {
        name: alarm
        for name, alarm in resources_of(document, "AWS::CloudWatch::Alarm").items()
        if any(m["MetricName"] == metric_name and dims.items() <= dimensions(m).items() for m in alarm_metrics(alarm))
    }


def the_alarm(document: dict[str, Any], metric_name: str, **dims: Any) -> dict[str, Any]:
    found = alarms_on(document, metric_name, **dims)
    assert len(found) == 1, f"expected one alarm on {metric_name} {dims}, found {sorted(found)}"
    return next(iter(found.values()))["Properties"]


def dashboard(document: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The dashboard's JSON (with ${...} left as text) and the !Sub variables it uses."""
    (resource,) = resources_of(document, "AWS::CloudWatch::Dashboard").values()
    body = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str), "DashboardBody is a !Sub of one JSON string"
    return json.loads(body), set(SUB_VARIABLE.findall(body))


def dashboard_metrics(body: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(namespace, name, dimensions) of every metric line of every graph, "." expanded."""
    for widget in body["widgets"]:
        previous: list[Any] = []
        for line in widget["properties"].get("metrics", []):
            fields = [f for f in line if not isinstance(f, dict)]
            if not fields:
                continue  # a math expression
            fields = [previous[i] if f == "." and i < len(previous) else f for i, f in enumerate(fields)]
            previous = fields
            yield fields[0], fields[1], dict(zip(fields[2::2], fields[3::2], strict=True))


def dashboard_expressions(body: dict[str, Any]) -> list[str]:
    return [
        field["expression"]
        for widget in body["widgets"]
        for line in widget["properties"].get("metrics", [])
        for field in line
        if isinstance(field, dict) and "expression" in field
    ]


def emitted_metric_names() -> dict[str, list[str]]:
    """Metric names the code publishes: add_metric(name="...") and count("...") literals,
    metric="..." handed to a use case's write, and Powertools' own."""
    emitted: dict[str, list[str]] = {}
    for folder in CODE_FOLDERS:
        for source in sorted(folder.rglob("*.py")):
            where = str(source.relative_to(REPO))
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), filename=where)):
                if not isinstance(node, ast.Call):
                    continue
                keywords = {k.arg: k.value for k in node.keywords}
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                name = keywords.get("name")
                if called == "add_metric" and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    emitted.setdefault(name.value, []).append(where)
                first = node.args[0] if node.args else None
                if called == "count" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    emitted.setdefault(first.value, []).append(where)
                metric = keywords.get("metric")
                if isinstance(metric, ast.Constant) and isinstance(metric.value, str):
                    emitted.setdefault(metric.value, []).append(where)
                for flag, metric in POWERTOOLS_METRICS.items():
                    value = keywords.get(flag)
                    if isinstance(value, ast.Constant) and value.value is True:
                        emitted.setdefault(metric, []).append(where)
    return emitted


# --------------------------------------------------------------------------- alarms


def test_every_api_function_has_error_rate_latency_and_throttle_alarms(transformed: dict[str, Any]) -> None:
    for function in API_FUNCTIONS:
        of_function = {"FunctionName": {"Ref": function}}
        rate = the_alarm(transformed, "Errors", **of_function)
        assert {m["MetricName"] for m in alarm_metrics({"Properties": rate})} == {"Errors", "Invocations"}
        assert rate["Threshold"] == {"Ref": "ErrorRateThresholdPercent"}
        (expression,) = [q["Expression"] for q in rate["Metrics"] if "Expression" in q]
        assert "100 * errors / invocations" in expression
        latency = the_alarm(transformed, "Duration", **of_function)
        assert latency["ExtendedStatistic"] == "p99"
        throttles = the_alarm(transformed, "Throttles", **of_function)
        assert throttles["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and throttles["Threshold"] == 1
    assert the_alarm(transformed, "Duration", FunctionName={"Ref": "AuthFunction"})["Threshold"] == {
        "Ref": "AuthLatencyP99ThresholdMs"
    }


def test_http_api_alarms_cover_5xx_4xx_latency_and_throttling(transformed: dict[str, Any]) -> None:
    api = {"ApiId": {"Ref": "HttpApi"}, "Stage": "$default"}
    assert the_alarm(transformed, "5xx", **api)["Threshold"] == {"Ref": "ErrorRateThresholdPercent"}
    assert the_alarm(transformed, "4xx", **api)["Threshold"] == {"Ref": "Api4xxRateThresholdPercent"}
    assert the_alarm(transformed, "Latency", **api)["ExtendedStatistic"] == "p99"
    # HTTP APIs publish no throttle metric: the access log's gateway-made 429s are counted.
    (metric_filter,) = resources_of(transformed, "AWS::Logs::MetricFilter").values()
    props = metric_filter["Properties"]
    assert props["LogGroupName"] == {"Ref": "ApiAccessLogGroup"}
    assert '$.status = "429"' in props["FilterPattern"] and '$.integrationStatus = "-"' in props["FilterPattern"]
    (transformation,) = props["MetricTransformations"]
    assert transformation["MetricNamespace"] == namespace(transformed)
    throttled = the_alarm(transformed, transformation["MetricName"])
    assert throttled["Namespace"] == namespace(transformed)
    # Both fields the filter reads are in the access log format.
    (stage,) = resources_of(transformed, "AWS::ApiGateway" + "V2::Stage").values()
    log_format = json.loads(stage["Properties"]["AccessLogSettings"]["Format"].replace("$context.", ""))
    assert {"status", "integrationStatus"} <= set(log_format)


def test_sync_pass_alarms_when_it_fails_or_stops_running(transformed: dict[str, Any]) -> None:
    sync = {"FunctionName": {"Ref": "CacheSyncFunction"}}
    failing = the_alarm(transformed, "Errors", **sync)
    assert failing["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and failing["Threshold"] == 1
    stopped = the_alarm(transformed, "Invocations", **sync)
    assert stopped["ComparisonOperator"] == "LessThanThreshold" and stopped["Threshold"] == 1
    assert stopped["Period"] * stopped["EvaluationPeriods"] == 15 * 60
    assert stopped["TreatMissingData"] == "breaching"  # no invocation publishes no datapoint at all
    assert transformed["Parameters"]["SyncScheduleRate"]["Default"] == "rate(5 minutes)"  # well inside 15 minutes


def test_events_alarms_cover_dead_letters_queue_age_outbox_lag_and_failures(transformed: dict[str, Any]) -> None:
    ns = namespace(transformed)
    dead_letters = the_alarm(
        transformed,
        "ApproximateNumberOfMessagesVisible",
        QueueName={"Fn::GetAtt": ["EventsDeadLetterQueue", "QueueName"]},
    )
    assert dead_letters["Namespace"] == "AWS/SQS"
    assert dead_letters["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and dead_letters["Threshold"] == 1
    assert dead_letters["EvaluationPeriods"] == 1  # one parked event is already worth a look
    waiting = the_alarm(
        transformed, "ApproximateAgeOfOldestMessage", QueueName={"Fn::GetAtt": ["EventsQueue", "QueueName"]}
    )
    # Longer than a healthy retry (visibility timeout) would keep an event waiting.
    assert waiting["Threshold"] >= transformed["Resources"]["EventsQueue"]["Properties"]["VisibilityTimeout"]

    lag = the_alarm(transformed, "OutboxLagSeconds")
    assert lag["Namespace"] == ns
    assert lag["Dimensions"] == [{"Name": "service", "Value": "reservations"}]
    assert lag["Statistic"] == "Maximum"
    assert lag["ComparisonOperator"] == "GreaterThanThreshold" and lag["Threshold"] == 300
    assert lag["EvaluationPeriods"] == lag["DatapointsToAlarm"] == 3
    # Every dispatch pass reports the lag (0 when the outbox is empty): no datapoint
    # means no pass finished, which is the same outage.
    assert lag["TreatMissingData"] == "breaching"
    assert lag["Period"] * lag["EvaluationPeriods"] <= 15 * 60

    errors = the_alarm(transformed, "Errors", FunctionName={"Ref": "EventsFunction"})
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and errors["Threshold"] == 1

    webhooks = the_alarm(transformed, "WebhookFailures")
    assert {m["MetricName"] for m in alarm_metrics({"Properties": webhooks})} == {"WebhookFailures", "WebhookAttempts"}
    (expression,) = [q["Expression"] for q in webhooks["Metrics"] if "Expression" in q]
    assert "100 * failures / attempts" in expression


def test_cache_outage_alarm_reads_the_metric_of_the_circuit_breaker(transformed: dict[str, Any]) -> None:
    alarm = the_alarm(transformed, "CacheUnavailable")
    assert alarm["Namespace"] == namespace(transformed)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "reservations"}]


@pytest.mark.parametrize("which", ["template", "data-stack"])
def test_alarms_notify_the_optional_topic(which: str, transformed: dict[str, Any]) -> None:
    document = transformed if which == "template" else load_template(DATA_STACK)
    parameter = document["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""  # no topic: the alarms exist, without actions
    assert document["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    alarms = resources_of(document, "AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == ALARM_ACTIONS, name
        assert props["OKActions"] == ALARM_ACTIONS, name
        assert props.get("AlarmDescription"), name
        assert props.get("TreatMissingData"), name  # chosen, not left to the default


def test_data_stack_alarms_on_aurora_and_the_cache() -> None:
    document = load_template(DATA_STACK)
    cluster = {"DBClusterIdentifier": {"Ref": "DatabaseCluster"}}
    assert the_alarm(document, "CPUUtilization", **cluster)["Threshold"] == {"Ref": "DatabaseCpuThresholdPercent"}
    assert the_alarm(document, "DatabaseConnections", **cluster)["Threshold"] == {"Ref": "DatabaseConnectionsThreshold"}
    assert the_alarm(document, "ACUUtilization", **cluster)
    # ElastiCache Serverless: per cache under clusterId; limits relative to the cache's own.
    cache = {"clusterId": {"Ref": "Cache"}}
    storage = the_alarm(document, "BytesUsedForCache", **cache)
    assert "CacheMaxDataGB" in json.dumps(storage["Metrics"])
    compute = the_alarm(document, "ElastiCacheProcessingUnits", **cache)
    assert "CacheMaxEcpuPerSecond" in json.dumps(compute["Metrics"])
    assert the_alarm(document, "ThrottledCmds", **cache)


# --------------------------------------------------------------------------- dashboard


def test_dashboard_shows_requests_latency_errors_cold_starts_bookings_cache_and_sync(
    transformed: dict[str, Any],
) -> None:
    body, _ = dashboard(transformed)
    ns = namespace(transformed)
    metrics = list(dashboard_metrics(body))
    names = {(namespace_, name) for namespace_, name, _ in metrics}
    for expected in [
        ("AWS/ApiGateway", "Count"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/ApiGateway", "4xx"),
        ("AWS/ApiGateway", "5xx"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        (ns, "Reservations"),
        (ns, "CacheHits"),
        (ns, "CacheMisses"),
        (ns, "CachePartials"),
        (ns, "ExpiredHolds"),
        (ns, "CacheKeysChecked"),
        (ns, "CacheKeysRepaired"),
        (ns, "SyncDuration"),
        (ns, "EventsPublished"),
        (ns, "EventsConsumed"),
        (ns, "OutboxLagSeconds"),
        (ns, "RemindersQueued"),
        (ns, "WebhookAttempts"),
        (ns, "WebhookFailures"),
        (ns, "MailSent"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    ]:
        assert expected in names, expected
    # Cold starts: Powertools' ColdStart carries function_name (the deployed name) and service.
    cold = {dims["function_name"] for namespace_, name, dims in metrics if (namespace_, name) == (ns, "ColdStart")}
    assert cold == {f"${{{f}}}" for f in (*API_FUNCTIONS, "CacheSyncFunction", "EventsFunction")}
    # Every function's duration, errors and throttles are graphed (migrate's only errors, by its alarm).
    for metric in ("Duration", "Errors"):
        graphed = {
            dims["FunctionName"] for namespace_, name, dims in metrics if (namespace_, name) == ("AWS/Lambda", metric)
        }
        assert graphed >= {f"${{{f}}}" for f in (*API_FUNCTIONS, "CacheSyncFunction", "EventsFunction")}, metric
    # Both queues: what waits, and what was parked.
    queues = {dims["QueueName"] for namespace_, name, dims in metrics if namespace_ == "AWS/SQS"}
    assert queues == {"${EventsQueue.QueueName}", "${EventsDeadLetterQueue.QueueName}"}
    # The code's metrics carry the service dimension (the access-log one is the template's).
    from_logs = {
        t["MetricName"]
        for f in resources_of(transformed, "AWS::Logs::MetricFilter").values()
        for t in f["Properties"]["MetricTransformations"]
    }
    for namespace_, name, dims in metrics:
        if namespace_ == ns and name not in from_logs:
            assert dims.get("service") == "reservations", name
    assert "100 * hits / (hits + misses + partials)" in dashboard_expressions(body)


def test_dashboard_refers_only_to_what_the_template_defines(transformed: dict[str, Any]) -> None:
    body, variables = dashboard(transformed)
    known = set(transformed["Resources"]) | set(transformed["Parameters"])
    for variable in variables:
        name = variable.split(".")[0]
        assert name.startswith("AWS::") or name in known, variable
    alarms = set(resources_of(transformed, "AWS::CloudWatch::Alarm"))
    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert {a.removeprefix("${").removesuffix(".Arn}") for a in status["properties"]["alarms"]} == alarms
    for widget in body["widgets"]:
        assert widget["x"] >= 0 and widget["x"] + widget["width"] <= 24, widget


# --------------------------------------------------------------------------- metrics the code emits


def referenced_custom_metrics(document: dict[str, Any]) -> dict[str, list[str]]:
    ns = namespace(document)
    referenced: dict[str, list[str]] = {}
    for name, alarm in resources_of(document, "AWS::CloudWatch::Alarm").items():
        for metric in alarm_metrics(alarm):
            if metric["Namespace"] == ns:
                referenced.setdefault(metric["MetricName"], []).append(name)
    body, _ = dashboard(document)
    for namespace_, metric_name, _ in dashboard_metrics(body):
        if namespace_ == ns:
            referenced.setdefault(metric_name, []).append("OperationsDashboard")
    return referenced


def test_every_custom_metric_of_the_alarms_and_dashboard_is_emitted(transformed: dict[str, Any]) -> None:
    emitted = emitted_metric_names()
    # Metrics the template itself makes (from the access log) count as emitted.
    for metric_filter in resources_of(transformed, "AWS::Logs::MetricFilter").values():
        for transformation in metric_filter["Properties"]["MetricTransformations"]:
            emitted.setdefault(transformation["MetricName"], []).append("template.yaml")
    referenced = referenced_custom_metrics(transformed)
    assert {"ColdStart", "CacheUnavailable", "SyncDuration", "OutboxLagSeconds", "WebhookFailures"} <= set(referenced)
    missing = {name: sorted(set(users)) for name, users in referenced.items() if name not in emitted}
    assert missing == {}, (
        f"metrics in namespace {namespace(transformed)!r} that no code emits "
        f'(add_metric(name="..."), count("...") or metric="..." under shared/ or functions/): {missing}'
    )


def test_metric_scan_finds_the_known_emitters() -> None:
    emitted = emitted_metric_names()
    where = {name: {Path(p).as_posix() for p in paths} for name, paths in emitted.items()}
    assert "functions/cache_sync/handler.py" in where["SyncDuration"]
    for name in ("OutboxLagSeconds", "EventsPublished", "EventsConsumed", "WebhookFailures", "WebhookAttempts"):
        assert "functions/events/handler.py" in where[name], name
    assert "shared/reservations/composition.py" in where["CacheUnavailable"]
    assert "shared/reservations/http/lambda_entry.py" in where["ColdStart"]
