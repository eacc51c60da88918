"""Each built function, cold-started from the sam build output only (function folder +
layer + what the Lambda runtime ships), answers a sample event from events/ against a
real Postgres and Redis.

The order is a deployment's: the migrate function upgrades an empty database (as the
custom resource does), then the API functions serve it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from reservations import migrations
from reservations.adapters.event_bus import EVENT_SOURCE
from reservations_dev import databases
from reservations_dev.template import load_template
from tests.infra.helpers import REPO, TEMPLATE, Build, Invocation, invoke_built, load_event

JWT_SECRET = "infra-tier-secret-that-is-long-enough-0123456789"


EMAIL_SENDER = "no-reply@example.com"
EVENT_BUS_NAME = "reservations-infra-events"


@pytest.fixture(scope="module")
def lambda_env(empty_database_module: str, aws_stub: Any) -> dict[str, str]:
    return {
        "APP_ENV": "aws",
        # SES and EventBridge as on AWS, answered by the local stub (nothing leaves the machine).
        "EMAIL_SENDER": EMAIL_SENDER,
        "EVENT_BUS_NAME": EVENT_BUS_NAME,
        "AWS_ENDPOINT_URL": aws_stub.url,
        "DATABASE_URL": empty_database_module,
        "DATABASE_TLS": "false",
        "REDIS_URL": os.environ["REDIS_URL"],
        "JWT_SECRET_KEY": JWT_SECRET,
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "POWERTOOLS_SERVICE_NAME": "reservations",
        "POWERTOOLS_METRICS_NAMESPACE": "ReservationsTest",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }


@pytest.fixture(scope="module")
def invoke(sam_build: Build, python312_path: str, lambda_runtime_dir: Path, lambda_env: dict[str, str]) -> Any:
    def _invoke(logical_id: str, *events: Any) -> Invocation:
        invocation = invoke_built(
            sam_build,
            logical_id,
            list(events),
            python=python312_path,
            runtime_dir=lambda_runtime_dir,
            environment=lambda_env,
        )
        foreign = invocation.foreign_modules
        assert foreign == [], f"{logical_id} imported code from outside its artefacts: {foreign}"
        return invocation

    return _invoke


@pytest.fixture(scope="module")
def migrated(invoke: Any, response_sink: Any, empty_database_module: str) -> dict[str, Any]:
    assert migrations.current_revision(empty_database_module) is None
    event = load_event("cfn-migrate-create.json")
    event["ResponseURL"] = response_sink.url
    invocation = invoke("MigrateFunction", event)
    return {"invocation": invocation, "responses": list(response_sink.received)}


def http(name: str, *, token: str | None = None, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    for key, value in changes.items():
        event[key] = value
    return event


def body_of(result: dict[str, Any]) -> Any:
    return json.loads(result["body"]) if result.get("body") else None


@pytest.fixture(scope="module")
def accounts(invoke: Any, migrated: dict[str, Any]) -> dict[str, Any]:
    """A patient and a provider registered (and the patient signed in) through the built auth function."""
    patient_email = f"patient-{uuid.uuid4().hex[:8]}@example.com"
    provider_email = f"provider-{uuid.uuid4().hex[:8]}@example.com"
    register = load_event("auth-register.json")
    patient = json.loads(register["body"]) | {"email": patient_email}
    provider = patient | {"email": provider_email, "role": "provider", "name": "Dr Example"}
    form = urlencode({"username": patient_email, "password": patient["password"]})
    token_event = http(
        "auth-register.json",
        routeKey="POST /token",
        rawPath="/token",
        body=form,
        headers={**register["headers"], "content-type": "application/x-www-form-urlencoded"},
    )
    token_event["requestContext"] = {**register["requestContext"], "routeKey": "POST /token"}
    token_event["requestContext"]["http"] = {**register["requestContext"]["http"], "path": "/token"}
    invocation = invoke(
        "AuthFunction",
        http("auth-register.json"),  # the sample as it is: pat@example.com
        http("auth-register.json", body=json.dumps(patient)),
        http("auth-register.json", body=json.dumps(provider)),
        token_event,
    )
    return {
        "invocation": invocation,
        "token": body_of(invocation.ok(3))["access_token"],
        "provider_id": body_of(invocation.ok(2))["id"],
    }


# --------------------------------------------------------------------------- migrate


def test_migrate_function_upgrades_an_empty_database(migrated: dict[str, Any], empty_database_module: str) -> None:
    head = migrations.head_revision()
    assert migrations.current_revision(empty_database_module) == head
    assert migrated["invocation"].ok()["Status"] == "SUCCESS"
    (response,) = migrated["responses"]
    assert response["content_type"] == ""  # what the pre-signed S3 URL was signed for
    body = response["body"]
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["Data"] == {"Revision": head, "PreviousRevision": ""}
    assert body["LogicalResourceId"] == "DatabaseMigrations"
    assert body["PhysicalResourceId"] == "reservations-dev-DatabaseMigrations"


def test_migrate_function_is_a_noop_on_a_current_database(
    invoke: Any, migrated: dict[str, Any], response_sink: Any, empty_database_module: str
) -> None:
    response_sink.received.clear()
    update = load_event("cfn-migrate-update.json") | {"ResponseURL": response_sink.url}
    delete = load_event("cfn-migrate-delete.json") | {"ResponseURL": response_sink.url}
    invocation = invoke("MigrateFunction", update, delete, {"action": "migrate"})
    head = migrations.head_revision()
    statuses = [r["body"]["Status"] for r in response_sink.received]
    assert statuses == ["SUCCESS", "SUCCESS"]
    assert response_sink.received[0]["body"]["Data"] == {"Revision": head, "PreviousRevision": head}
    assert invocation.ok(2) == {"revision": head, "previous_revision": head, "changed": False}
    assert migrations.current_revision(empty_database_module) == head


# --------------------------------------------------------------------------- API functions


def test_auth_function_registers_and_signs_in(accounts: dict[str, Any]) -> None:
    invocation = accounts["invocation"]
    sample, patient, provider, token = (invocation.ok(i) for i in range(4))
    assert sample["statusCode"] == 201, sample
    assert body_of(sample)["email"] == "pat@example.com"
    assert (patient["statusCode"], provider["statusCode"], token["statusCode"]) == (201, 201, 200)
    assert body_of(token)["token_type"].lower() == "bearer"


def test_providers_function_lists_free_slots(invoke: Any, accounts: dict[str, Any]) -> None:
    provider_id = str(accounts["provider_id"])
    event = http("providers-time-slots.json", token=accounts["token"])
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/providers/{provider_id}/time-slots"
    event["pathParameters"] = {"provider_id": provider_id}
    # The sample's dates age; listings start yesterday at the earliest, so ask for this week.
    today = datetime.now(UTC).date()
    week = {"start_date": today.isoformat(), "end_date": (today + timedelta(days=6)).isoformat()}
    event["queryStringParameters"] = week
    event["rawQueryString"] = "&".join(f"{key}={value}" for key, value in week.items())
    anonymous = http("providers-time-slots.json")
    anonymous["headers"].pop("authorization")
    invocation = invoke("ProvidersFunction", event, anonymous)
    slots, refused = invocation.ok(0), invocation.ok(1)
    assert slots["statusCode"] == 200, slots
    assert body_of(slots) == []  # no availability posted yet
    assert refused["statusCode"] == 401


def test_appointments_function_lists_own_appointments(invoke: Any, accounts: dict[str, Any]) -> None:
    invocation = invoke("AppointmentsFunction", http("appointments-list.json", token=accounts["token"]))
    result = invocation.ok()
    assert result["statusCode"] == 200, result
    assert body_of(result) == []


def test_docs_function_serves_the_merged_document(invoke: Any, migrated: dict[str, Any]) -> None:
    result = invoke("DocsFunction", load_event("docs-openapi.json")).ok()
    assert result["statusCode"] == 200
    assert body_of(result) == json.loads((REPO / "openapi.json").read_text())


def test_docs_function_serves_swagger_ui_from_its_own_files(invoke: Any, migrated: dict[str, Any]) -> None:
    def get(path: str) -> dict[str, Any]:
        event = copy.deepcopy(load_event("docs-openapi.json"))
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {path}"
        event["headers"]["accept"] = "*/*"
        return event

    paths = [
        "/docs",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
        "/redoc",
        "/redoc/redoc.standalone.js",
        "/redoc/redoc-initializer.js",
    ]
    invocation = invoke("DocsFunction", *(get(p) for p in paths))
    for index, path in enumerate(paths):
        result = invocation.ok(index)
        assert result["statusCode"] == 200, (path, result)
        assert "script-src 'self'" in result["headers"]["content-security-policy"], path
    assert "docs/swagger-ui-bundle.js" in invocation.ok(0)["body"]
    assert "SwaggerUIBundle" in invocation.ok(1)["body"]
    # ReDoc's bundle, fetched into the build by functions/docs/Makefile.
    assert "redoc/redoc.standalone.js" in invocation.ok(4)["body"]
    assert "'nonce-" in invocation.ok(4)["headers"]["content-security-policy"]
    assert "Redoc" in invocation.ok(5)["body"]


def test_cache_sync_function_runs_a_scheduled_pass(invoke: Any, accounts: dict[str, Any]) -> None:
    summary = invoke("CacheSyncFunction", load_event("scheduled.json")).ok()
    assert {"expired_holds", "keys_checked", "keys_repaired"} <= set(summary)


def api_event(method: str, path: str, *, token: str | None = None, route_key: str | None = None) -> dict[str, Any]:
    """The sample API event turned into ``method path`` (``route_key`` as the template declares it)."""
    event = http("appointments-list.json", token=token)
    if token is None:
        event["headers"].pop("authorization")
    event.pop("queryStringParameters")
    event["rawQueryString"] = ""
    event["rawPath"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key or f"{method} {path}"
    event["requestContext"]["http"] = {**event["requestContext"]["http"], "method": method, "path": path}
    return event


def test_integrations_function_serves_calendar_feeds_and_guards_webhooks(invoke: Any, accounts: dict[str, Any]) -> None:
    token = accounts["token"]  # the patient's
    created = invoke("IntegrationsFunction", api_event("POST", "/me/calendar-feed", token=token)).ok()
    assert created["statusCode"] == 201, created
    feed_token = body_of(created)["url"].rstrip("/").rsplit("/", 1)[1]
    feed = api_event("GET", f"/calendar/{feed_token}", route_key="GET /calendar/{token}")
    feed["pathParameters"] = {"token": feed_token}
    invocation = invoke(
        "IntegrationsFunction",
        feed,  # no bearer token: the feed URL is the credential
        api_event("GET", "/webhooks", token=token),
        api_event("GET", "/webhooks"),
    )
    calendar, patient_webhooks, anonymous = invocation.ok(0), invocation.ok(1), invocation.ok(2)
    assert calendar["statusCode"] == 200, calendar
    assert calendar["headers"]["content-type"].startswith("text/calendar")
    assert "BEGIN:VCALENDAR" in calendar["body"]
    assert patient_webhooks["statusCode"] == 403 and body_of(patient_webhooks)["code"] == "wrong_role"
    assert anonymous["statusCode"] == 401


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    """An SQS record as Lambda's poller delivers it (the body: what the rule sent)."""
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795507200000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795507200001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:reservations-dev-EventsQueue-abc",
        "awsRegion": "us-east-1",
    }


def test_events_function_reports_only_the_records_it_could_not_consume(invoke: Any, accounts: dict[str, Any]) -> None:
    # The rule's target gets the whole EventBridge event; the outbox event is its detail.
    detail = {
        "id": str(uuid.uuid4()),
        "type": "availability.updated",
        "occurred_at": "2026-11-24T08:00:00Z",
        "sequence": 1,
        "data": {"provider_id": accounts["provider_id"]},
    }
    envelope = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail["type"],
        "source": EVENT_SOURCE,
        "account": "123456789012",
        "time": detail["occurred_at"],
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    batch = {"Records": [sqs_record("consumed", json.dumps(envelope)), sqs_record("broken", "not an event")]}
    result = invoke("EventsFunction", batch).ok()
    assert result == {"batchItemFailures": [{"itemIdentifier": "broken"}]}


def test_events_function_publishes_the_outbox_and_sends_queued_mail_as_iam_allows(
    invoke: Any, accounts: dict[str, Any], aws_stub: Any, empty_database_module: str, source: dict[str, Any]
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from reservations.adapters.mail import compose
    from reservations.domain.events import enqueue_mail

    # An unpublished outbox event and a queued message, as a write would have left them.
    engine = create_engine(empty_database_module)
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                text(
                    "INSERT INTO outbox_events (type, occurred_at, provider_id, data) "
                    "VALUES ('availability.updated', now(), :provider, CAST(:data AS jsonb))"
                ),
                {"provider": accounts["provider_id"], "data": json.dumps({"provider_id": accounts["provider_id"]})},
            )
            message = compose(sender=EMAIL_SENDER, to="pat@example.com", subject="infra", body="hello")
            enqueue_mail(session, key=f"infra-{uuid.uuid4()}", user_id=None, message=message, now=datetime.now(UTC))
    finally:
        engine.dispose()
    aws_stub.calls.clear()

    summary = invoke("EventsFunction", load_event("scheduled.json")).ok()
    assert summary["published"] >= 1 and summary["mail_sent"] >= 1, summary

    # What the code sent is exactly what the bus rule matches and the IAM policies allow.
    resources = source["Resources"]
    entries = [e for c in aws_stub.calls if c["action"] == "PutEvents" for e in c["params"]["Entries"]]
    assert entries and {e["EventBusName"] for e in entries} == {EVENT_BUS_NAME}
    (publish,) = resources["PublishEventsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert {e["Source"] for e in entries} == {publish["Condition"]["StringEquals"]["events:source"]}
    assert {e["Source"] for e in entries} == set(resources["EventsRule"]["Properties"]["EventPattern"]["source"])
    assert "availability.updated" in {e["DetailType"] for e in entries}
    assert all(json.loads(e["Detail"])["type"] == e["DetailType"] for e in entries)
    (mail,) = resources["SendMailPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    sent = [c for c in aws_stub.calls if c["action"].startswith("Send")]
    assert sent and all(f"ses:{c['action']}" in mail["Action"] for c in sent)
    assert {c["params"]["Source"] for c in sent} == {EMAIL_SENDER}  # the ses:FromAddress condition
    assert {c["action"] for c in aws_stub.calls} <= {"PutEvents", "SendRawEmail", "SendEmail"}


def test_cold_imports_use_only_the_build(invoke: Any, migrated: dict[str, Any]) -> None:
    # foreign_modules is checked on every invocation; this one also records the import time.
    invocation = invoke("AuthFunction", load_event("http-api-request.json"))
    assert invocation.ok()["statusCode"] == 401
    assert invocation.init_seconds < 10


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def empty_database_module(database_url: str) -> Iterator[str]:
    with databases.scratch_database(database_url, "reservations_built", migrate=False) as url:
        yield url
