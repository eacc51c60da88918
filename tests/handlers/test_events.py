"""Events through the real handlers: the outbox written with every transition, the
publisher (killed mid-batch, and onto an EventBridge bus), the events function off the
queue, signed webhook deliveries with retries, mail with .ics, reminders, calendar feeds.

A database of the module's own: the publisher and the dispatch pass work on whole tables."""

from __future__ import annotations

import email
import email.utils
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from email import policy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import text

from reservations.composition import Container
from reservations.config import Settings
from tests.builders import (
    NOW,
    SLOT,
    Clock,
    Person,
    create_admin,
    create_user,
    empty_tables,
    open_weekdays,
    private_database,
)
from tests.support import FunctionClient, LambdaContext, load_function
from tests.webhook_receiver import Receiver, webhook_receiver
from tests.world import follow

# The providers here work 8am-4pm in New York: 09:00 and 11:00 there (14:00, 16:00 UTC).
START = SLOT + timedelta(hours=5)
START_2 = START + timedelta(hours=2)


@pytest.fixture(scope="module")
def events_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "events") as url:
        yield url


class Hub:
    """The functions on a database of their own, one clock, mail written to ``mail_dir``."""

    def __init__(self, settings: Settings, database_url: str, mail_dir: Path) -> None:
        self.clock = Clock(NOW)
        self.mail_dir = mail_dir
        private = settings.model_copy(
            update={
                "database_url": database_url,
                "redis_url": "",
                "mail_dir": str(mail_dir),
                "webhook_allow_private": True,
                "max_active_holds": 50,
                # A hung receiver costs a test half a second, not five.
                "webhook_timeout_seconds": 0.5,
            }
        )
        self.container = Container(private, clock=self.clock)
        self.modules: list[ModuleType] = []
        self.appointments = self.client("appointments")
        self.providers = self.client("providers")
        self.integrations = self.client("integrations")
        self.auth = self.client("auth")
        self.events_function = self.function("events")

    def function(self, name: str) -> ModuleType:
        module = load_function(name)
        follow(module.container, self.container)
        self.modules.append(module)
        return module

    def client(self, name: str) -> FunctionClient:
        return FunctionClient(self.function(name))

    @property
    def events(self) -> Any:
        return self.events_function.container.events

    def dispatch(self) -> dict[str, Any]:
        """The events function's scheduled pass, invoked as EventBridge Scheduler would."""
        result: dict[str, Any] = self.events_function.handler(
            {"detail-type": "Scheduled Event", "time": NOW.isoformat()}, LambdaContext()
        )
        return result

    def provider(self) -> Person:
        provider = create_user(self.container, "provider", timezone="America/New_York")
        open_weekdays(self.container, provider)
        return provider

    def patient(self, timezone: str = "Europe/London") -> Person:
        return create_user(self.container, "patient", timezone=timezone)

    def act(self, action: str, user: Person, **body: Any) -> dict[str, Any]:
        response = self.appointments.post(f"/appointments/{action}", json_body=body, token=user.token)
        assert response.status in (200, 201), response.body
        result: dict[str, Any] = response.body
        return result

    def book(self, patient: Person, provider: Person, start: Any = START) -> dict[str, Any]:
        held = self.act("reserve", patient, provider_id=provider.id, start_time=start.isoformat())
        return self.act("confirm", patient, slot_id=held["id"])

    def outbox(self, appointment_id: int | None = None) -> list[Any]:
        query = "SELECT * FROM outbox_events"
        if appointment_id is not None:
            query += " WHERE appointment_id = :id"
        with self.container.unit_of_work() as session:
            return list(session.execute(text(query + " ORDER BY position"), {"id": appointment_id}).all())

    def mail(self, to: str | None = None) -> list[email.message.EmailMessage]:
        messages = []
        for path in sorted(self.mail_dir.glob("*.eml")) if self.mail_dir.exists() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            if to is None or to in str(message["To"]):
                messages.append(message)
        return messages  # type: ignore[return-value]

    def webhook(self, owner: Person, receiver: Receiver, events: Sequence[str] = ("*",)) -> dict[str, Any]:
        response = self.integrations.post(
            "/webhooks", json_body={"url": receiver.url, "events": list(events)}, token=owner.token
        )
        assert response.status == 201, response.body
        receiver.secret = response.body["secret"]
        created: dict[str, Any] = response.body
        return created

    def deliveries(self, owner: Person, webhook_id: int) -> list[dict[str, Any]]:
        response = self.integrations.get(f"/webhooks/{webhook_id}/deliveries", token=owner.token)
        assert response.status == 200, response.body
        found: list[dict[str, Any]] = response.body
        return found

    def close(self) -> None:
        self.container.close()
        for module in self.modules:
            module.container.close()


@pytest.fixture
def hub(settings: Settings, events_database: str, tmp_path: Path) -> Iterator[Hub]:
    empty_tables(events_database)
    created = Hub(settings, events_database, tmp_path / "mail")
    yield created
    created.close()


def ics_of(message: email.message.EmailMessage) -> Calendar:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            return Calendar.from_ical(part.get_payload(decode=True))
    raise AssertionError(f"no text/calendar part in {message['Subject']!r}")


def event_of(calendar: Calendar) -> Any:
    [event] = calendar.walk("VEVENT")
    return event


# --- the outbox --------------------------------------------------------------------------------


def test_every_transition_writes_one_event_carrying_the_appointment_as_the_api_shows_it(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient()
    held = hub.act("reserve", patient, provider_id=provider.id, start_time=START.isoformat())
    hub.act("confirm", patient, slot_id=held["id"])
    moved = hub.act("reschedule", patient, slot_id=held["id"], start_time=START_2.isoformat())
    hub.act("cancel", patient, slot_id=moved["id"], reason="feeling better")

    first = hub.outbox(held["id"])
    second = hub.outbox(moved["id"])
    assert [(e.type, e.sequence) for e in first] == [("appointment.reserved", 1), ("appointment.confirmed", 2)]
    assert [(e.type, e.sequence) for e in second] == [("appointment.rescheduled", 1), ("appointment.cancelled", 2)]
    # What the API answers now equals the last event's data about each appointment.
    for appointment_id, last in (
        (held["id"], second[0].data["previous"]),
        (moved["id"], second[-1].data["appointment"]),
    ):
        shown = hub.appointments.get(f"/appointments/{appointment_id}", token=patient.token).body
        assert last == shown
    assert first[0].data["appointment"]["expires_at"] == held["expires_at"]
    assert second[0].data["appointment"]["rescheduled_from"] == held["id"]
    assert second[0].data["previous"]["status"] == "rescheduled"


def test_attendance_and_availability_changes_are_events_too(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient()
    booked = hub.book(patient, provider)
    hub.clock.current = START + timedelta(hours=1)
    for attendance in ("no_show", "completed"):
        response = hub.appointments.post(
            f"/appointments/{booked['id']}/attendance", json_body={"status": attendance}, token=provider.token
        )
        assert response.status == 200, response.body
    body = {"exceptions": [{"date": "2027-01-15", "times": []}]}
    response = hub.providers.post(f"/providers/{provider.id}/availability", json_body=body, token=provider.token)
    assert response.status == 200, response.body

    types = [e.type for e in hub.outbox()]
    assert types.count("appointment.no_show") == 1 and types.count("appointment.completed") == 1
    [update] = [e for e in hub.outbox() if e.type == "availability.updated" and e.occurred_at == hub.clock()]
    assert update.data["provider_id"] == provider.id
    assert update.data["first_date"] == update.data["last_date"] == "2027-01-15"


def test_expiry_found_lazily_or_by_the_sweeper_is_announced_once(hub: Hub) -> None:
    provider = hub.provider()
    lazily, swept = hub.patient(), hub.patient()
    first = hub.act("reserve", lazily, provider_id=provider.id, start_time=START.isoformat())
    second = hub.act("reserve", swept, provider_id=provider.id, start_time=START_2.isoformat())
    hub.clock.advance(hours=1)
    # A reservation of the same slot expires the stale hold in its own transaction.
    hub.act("reserve", hub.patient(), provider_id=provider.id, start_time=START.isoformat())
    for _ in range(2):
        hub.container.housekeeping.sync_pass()

    for appointment_id in (first["id"], second["id"]):
        assert [e.type for e in hub.outbox(appointment_id)] == ["appointment.reserved", "appointment.expired"]


def test_a_refused_write_leaves_no_event(hub: Hub) -> None:
    provider, winner, loser = hub.provider(), hub.patient(), hub.patient()
    hub.act("reserve", winner, provider_id=provider.id, start_time=START.isoformat())
    refused = hub.appointments.post(
        "/appointments/reserve",
        json_body={"provider_id": provider.id, "start_time": START.isoformat()},
        token=loser.token,
    )
    assert refused.status == 409
    assert [e.patient_id for e in hub.outbox() if e.type == "appointment.reserved"] == [winner.id]


# --- the publisher -----------------------------------------------------------------------------


class Killed(BaseException):
    """The process dies: nothing after this line runs, nothing uncommitted survives."""


class DyingSink:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, events: Sequence[Any], session: Any) -> set[str]:
        self.sent.extend(str(e["id"]) for e in events)
        raise Killed


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, events: Sequence[Any], session: Any) -> set[str]:
        self.sent.extend(str(e["id"]) for e in events)
        return {str(e["id"]) for e in events}


def unpublished_reservations(hub: Hub) -> list[str]:
    """Three reservations whose events nobody publishes after commit: the outbox's ids."""
    hub.container.configure(publish_after_commit=False)
    for module in hub.modules:
        module.container.configure(publish_after_commit=False)
    provider = hub.provider()
    for index in range(3):
        hub.act(
            "reserve",
            hub.patient(),
            provider_id=provider.id,
            start_time=(START + timedelta(minutes=15 * index)).isoformat(),
        )
    return [str(e.id) for e in hub.outbox()]


def test_a_publisher_killed_between_sending_and_marking_loses_nothing(hub: Hub) -> None:
    from reservations.usecases.events import EventUseCases

    committed = unpublished_reservations(hub)

    dying = DyingSink()
    with pytest.raises(Killed):
        EventUseCases(hub.container, sink=dying, transport=hub.container.webhook_transport).publish_pending(batch=2)
    assert dying.sent == committed[:2]
    assert all(e.published_at is None for e in hub.outbox())

    survivor = RecordingSink()
    publisher = EventUseCases(hub.container, sink=survivor, transport=hub.container.webhook_transport)
    assert publisher.publish_pending(batch=2) == len(committed)
    assert survivor.sent == committed  # the same ids again, in commit order, none lost
    assert publisher.publish_pending() == 0
    assert all(e.published_at is not None for e in hub.outbox())


class PickySink(RecordingSink):
    """Accepts every event but the ones named (as EventBridge reports failed entries)."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def send(self, events: Sequence[Any], session: Any) -> set[str]:
        return super().send(events, session) - self.refused


def test_an_event_the_bus_refuses_stays_unpublished_and_goes_in_the_next_pass(hub: Hub) -> None:
    from reservations.usecases.events import EventUseCases

    committed = unpublished_reservations(hub)

    picky = PickySink({committed[1]})
    publisher = EventUseCases(hub.container, sink=picky, transport=hub.container.webhook_transport)
    assert publisher.publish_pending() == len(committed) - 1
    assert picky.sent == committed
    assert [str(e.id) for e in hub.outbox() if e.published_at is None] == [committed[1]]

    survivor = RecordingSink()
    later = EventUseCases(hub.container, sink=survivor, transport=hub.container.webhook_transport)
    assert later.publish_pending() == 1
    assert survivor.sent == [committed[1]]
    assert all(e.published_at is not None for e in hub.outbox())


def test_published_events_reach_the_bus_and_the_queue_feeds_the_events_function(hub: Hub) -> None:
    import json

    import boto3
    from moto import mock_aws

    with mock_aws():
        events_client = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        events_client.create_event_bus(Name="reservations-events")
        queue_url = sqs.create_queue(QueueName="events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events_client.put_rule(
            Name="to-queue", EventBusName="reservations-events", EventPattern=json.dumps({"source": ["reservations"]})
        )
        events_client.put_targets(
            Rule="to-queue", EventBusName="reservations-events", Targets=[{"Id": "q", "Arn": queue_arn}]
        )
        for container in [hub.container, *(m.container for m in hub.modules)]:
            container.configure(event_bus_name="reservations-events")
            container.__dict__.pop("event_sink", None)
            container.__dict__.pop("events", None)
        admin = create_admin(hub.container)
        with webhook_receiver() as receiver:
            hub.webhook(admin, receiver)
            provider, patient = hub.provider(), hub.patient()
            booked = hub.book(patient, provider)  # published to the bus right after each commit

            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
            details = [json.loads(m["Body"])["detail"] for m in messages]
            appointment_events = [d for d in details if d["type"].startswith("appointment.")]
            assert [d["type"] for d in appointment_events] == ["appointment.reserved", "appointment.confirmed"]
            assert {d["id"] for d in details} == {str(e.id) for e in hub.outbox()}
            assert all(e.published_at is not None for e in hub.outbox())

            records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]
            batch = {"Records": records + records[:1]}  # SQS delivers at least once
            assert hub.events_function.handler(batch, LambdaContext()) == {"batchItemFailures": []}
            ids = receiver.ids()
            assert sorted(ids) == sorted(d["id"] for d in details)  # each event delivered once
            assert all(r.verified for r in receiver.received)
            assert booked["id"] in [r.body["data"].get("appointment", {}).get("id") for r in receiver.received]


# --- webhook deliveries --------------------------------------------------------------------------


def test_deliveries_are_signed_and_retried_with_the_same_id_after_errors_and_timeouts(hub: Hub) -> None:
    provider = hub.provider()
    with webhook_receiver() as receiver:
        webhook = hub.webhook(provider, receiver, ["appointment.reserved"])
        receiver.script = [500, "hang", 200]
        hub.act("reserve", hub.patient(), provider_id=provider.id, start_time=START.isoformat())

        hub.dispatch()  # 500
        [delivery] = hub.deliveries(provider, webhook["id"])
        assert (delivery["status"], delivery["attempts"], delivery["last_response_status"]) == ("pending", 1, 500)
        first_retry_in = (_parse(delivery["next_attempt_at"]) - hub.clock()).total_seconds()
        assert 0 < first_retry_in <= 10
        hub.dispatch()  # not due yet: nothing sent
        assert len(receiver.received) == 1
        hub.clock.advance(seconds=10)
        hub.dispatch()  # times out
        receiver.release.set()
        hub.clock.advance(minutes=10)
        hub.dispatch()  # 200

    [delivery] = hub.deliveries(provider, webhook["id"])
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 3)
    assert [r.answered for r in receiver.received] == [500, None, 200]
    assert len(set(receiver.ids())) == 1 and receiver.ids()[0] == delivery["event_id"]
    assert all(r.verified for r in receiver.received)
    assert receiver.received[0].body["type"] == "appointment.reserved"
    assert set(receiver.received[0].body) == {"type", "timestamp", "data"}


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_failed_delivery_can_be_retried_at_once_and_an_endpoint_failing_a_day_is_disabled(hub: Hub) -> None:
    provider = hub.provider()
    with webhook_receiver() as receiver:
        webhook = hub.webhook(provider, receiver, ["appointment.reserved"])
        receiver.script = [503] * 20
        hub.act("reserve", hub.patient(), provider_id=provider.id, start_time=START.isoformat())
        hub.dispatch()
        [delivery] = hub.deliveries(provider, webhook["id"])
        retried = hub.integrations.post(
            f"/webhooks/{webhook['id']}/deliveries/{delivery['id']}/retry", token=provider.token
        )
        assert retried.status == 200 and retried.body["attempts"] == 2
        assert len(receiver.received) == 2  # sent at once, not at its scheduled time
        for _ in range(8):
            hub.clock.advance(hours=5)
            hub.dispatch()

    shown = hub.integrations.get(f"/webhooks/{webhook['id']}", token=provider.token).body
    assert shown["active"] is False and shown["disabled_at"] is not None
    [delivery] = hub.deliveries(provider, webhook["id"])
    assert delivery["status"] == "failed"
    notices = [m for m in hub.mail(provider.email) if "disabled" in str(m["Subject"]).lower()]
    assert len(notices) == 1
    # Nothing further is fanned out to a disabled endpoint.
    next_week = START + timedelta(days=7)
    hub.act("reserve", hub.patient(), provider_id=provider.id, start_time=next_week.isoformat())
    assert len(hub.deliveries(provider, webhook["id"])) == 1


def test_providers_receive_their_own_events_and_admins_everything(hub: Hub) -> None:
    mine, other, admin = hub.provider(), hub.provider(), create_admin(hub.container)
    with webhook_receiver() as own_receiver, webhook_receiver() as admin_receiver:
        hub.webhook(mine, own_receiver, ["appointment.reserved"])
        hub.webhook(admin, admin_receiver, ["appointment.reserved"])
        mine_held = hub.act("reserve", hub.patient(), provider_id=mine.id, start_time=START.isoformat())
        other_held = hub.act("reserve", hub.patient(), provider_id=other.id, start_time=START.isoformat())
        hub.dispatch()
    assert [r.body["data"]["appointment"]["id"] for r in own_receiver.received] == [mine_held["id"]]
    assert sorted(r.body["data"]["appointment"]["id"] for r in admin_receiver.received) == sorted(
        [mine_held["id"], other_held["id"]]
    )


def test_webhook_endpoints_belong_to_their_owner(hub: Hub) -> None:
    owner, stranger, patient = hub.provider(), hub.provider(), hub.patient()
    with webhook_receiver() as receiver:
        created = hub.webhook(owner, receiver)
        assert created["secret"].startswith("whsec_") and created["events"] == ["*"] and created["active"]
        path = f"/webhooks/{created['id']}"
        shown = hub.integrations.get(path, token=owner.token)
        assert shown.status == 200 and "secret" not in shown.body
        assert [w["id"] for w in hub.integrations.get("/webhooks", token=owner.token).body] == [created["id"]]
        for method, suffix in (
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/rotate-secret"),
            ("POST", "/ping"),
            ("GET", "/deliveries"),
        ):
            response = hub.integrations.call(method, path + suffix, token=stranger.token)
            assert (response.status, response.body["code"]) == (404, "webhook_not_found"), (method, suffix)
        assert hub.integrations.get("/webhooks", token=stranger.token).body == []
        refused = hub.integrations.post(
            "/webhooks", json_body={"url": receiver.url, "events": ["*"]}, token=patient.token
        )
        assert (refused.status, refused.body["code"]) == (403, "wrong_role")

        rotated = hub.integrations.post(f"{path}/rotate-secret", token=owner.token).body
        assert rotated["secret"] != created["secret"]
        receiver.secret = rotated["secret"]
        ping = hub.integrations.post(f"{path}/ping", token=owner.token)
        assert ping.status == 200 and ping.body["status"] == "succeeded" and ping.body["event_type"] == "webhook.ping"
        assert receiver.received[-1].verified and receiver.received[-1].body["type"] == "webhook.ping"
        succeeded = hub.integrations.post(f"{path}/deliveries/{ping.body['id']}/retry", token=owner.token)
        assert (succeeded.status, succeeded.body["code"]) == (409, "delivery_succeeded")

        assert hub.integrations.delete(path, token=owner.token).status == 204
        assert hub.integrations.get(path, token=owner.token).status == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.com/hook", "events": ["*"]}, None),
        ({"url": "http://user:pw@127.0.0.1:9/hook", "events": ["*"]}, "invalid_webhook_url"),
        ({"url": "https://example.com/hook", "events": []}, None),
        ({"url": "https://example.com/hook", "events": ["appointment.teleported"]}, None),
        ({"url": "https://example.com/hook", "events": ["*"], "secret": "mine"}, None),
    ],
)
def test_bad_webhook_registrations_are_422(hub: Hub, body: dict[str, Any], code: str | None) -> None:
    response = hub.integrations.post("/webhooks", json_body=body, token=hub.provider().token)
    assert response.status == 422, response.body
    if code:
        assert response.body["code"] == code


def test_the_number_of_webhooks_is_limited(hub: Hub) -> None:
    owner = hub.provider()
    for module in hub.modules:
        module.container.configure(max_webhooks_per_owner=2)
    body = {"url": "https://example.com/hook", "events": ["*"]}
    statuses = [hub.integrations.post("/webhooks", json_body=body, token=owner.token).status for _ in range(3)]
    assert statuses == [201, 201, 409]


def test_private_targets_are_refused_where_they_are_not_allowed(hub: Hub) -> None:
    owner = hub.provider()
    for module in hub.modules:
        module.container.configure(webhook_allow_private=False)
        module.container.__dict__.pop("webhook_transport", None)
    response = hub.integrations.post(
        "/webhooks", json_body={"url": "http://10.0.0.8/hook", "events": ["*"]}, token=owner.token
    )
    assert (response.status, response.body["code"]) == (422, "invalid_webhook_url")


# --- e-mail --------------------------------------------------------------------------------------


def test_booking_moving_and_cancelling_mail_the_patient_one_calendar_entry(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient("Europe/London")
    booked = hub.book(patient, provider)
    moved = hub.act("reschedule", patient, slot_id=booked["id"], start_time=START_2.isoformat())
    hub.act("cancel", patient, slot_id=moved["id"])
    hub.dispatch()

    confirmed, rescheduled, cancelled = hub.mail(patient.email)
    invites = [event_of(ics_of(m)) for m in (confirmed, rescheduled, cancelled)]
    assert [str(ics_of(m)["METHOD"]) for m in (confirmed, rescheduled, cancelled)] == ["REQUEST", "REQUEST", "CANCEL"]
    assert len({str(e["UID"]) for e in invites}) == 1
    sequences = [int(e["SEQUENCE"]) for e in invites]
    assert sequences == sorted(sequences) and sequences[0] < sequences[-1]
    assert invites[0].decoded("DTSTART") == START and invites[1].decoded("DTSTART") == START_2
    assert "14:00" in confirmed.get_body(("plain",)).get_content()  # London in January is UTC
    to_provider = hub.mail(provider.email)
    assert len(to_provider) == 2  # the new booking and the cancellation, nothing for the hold
    booked_notice = to_provider[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "09:00" in booked_notice and "EST" in str(to_provider[0]["Subject"])  # New York


def test_a_patient_who_turned_notifications_off_gets_no_mail(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient()
    response = hub.auth.patch("/me", json_body={"notify_email": False}, token=patient.token)
    assert response.status == 200 and response.body["notify_email"] is False
    hub.book(patient, provider)
    hub.dispatch()
    assert hub.mail(patient.email) == []
    assert len(hub.mail(provider.email)) == 1


def test_an_appointment_mail_sent_later_is_dated_when_it_was_queued(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient()
    hub.book(patient, provider)
    booked_at = hub.clock()
    hub.clock.advance(minutes=7)  # the pass that sends it runs later: its schedule, or a retry
    hub.dispatch()
    [confirmation] = hub.mail(patient.email)
    assert email.utils.parsedate_to_datetime(str(confirmation["Date"])) == booked_at
    assert event_of(ics_of(confirmation)).decoded("DTSTAMP") == booked_at


def test_a_reminder_is_sent_exactly_once_by_concurrent_passes_and_never_when_cancelled(hub: Hub) -> None:
    provider, kept, cancelled = hub.provider(), hub.patient(), hub.patient()
    hub.book(kept, provider)
    gone = hub.book(cancelled, provider, START_2)
    hub.act("cancel", cancelled, slot_id=gone["id"])
    hub.dispatch()
    before = len(hub.mail(kept.email))
    hub.clock.current = START - timedelta(hours=23)

    start = threading.Barrier(4)

    def one_pass() -> None:
        start.wait()
        hub.events.queue_due_reminders()

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hub.dispatch()
    hub.dispatch()

    reminders = [m for m in hub.mail(kept.email)[before:] if "reminder" in str(m["Subject"]).lower()]
    assert len(reminders) == 1
    assert not [m for m in hub.mail(cancelled.email) if "reminder" in str(m["Subject"]).lower()]


# --- PATCH /me and calendar feeds ------------------------------------------------------------------


def test_patch_me_changes_name_zone_and_notifications(hub: Hub) -> None:
    patient = hub.patient()
    changed = hub.auth.patch(
        "/me", json_body={"name": "Ada", "timezone": "Asia/Tokyo", "notify_email": False}, token=patient.token
    )
    assert changed.status == 200
    assert (changed.body["name"], changed.body["timezone"], changed.body["notify_email"]) == (
        "Ada",
        "Asia/Tokyo",
        False,
    )
    for body in ({"timezone": "Mars/Olympus"}, {"name": None}, {"email": "x@example.com"}, {"notify_email": 0}):
        assert hub.auth.patch("/me", json_body=body, token=patient.token).status == 422, body


def test_a_calendar_feed_lists_confirmed_appointments_until_its_token_is_replaced(hub: Hub) -> None:
    provider, patient = hub.provider(), hub.patient()
    booked = hub.book(patient, provider)
    hub.act("reserve", patient, provider_id=provider.id, start_time=START_2.isoformat())  # a hold: not listed
    created = hub.integrations.post("/me/calendar-feed", token=patient.token)
    assert created.status == 201
    token = created.body["url"].rsplit("/", 1)[1]

    feed = hub.integrations.get(f"/calendar/{token}")
    assert feed.status == 200 and feed.headers["content-type"].startswith("text/calendar")
    [entry] = Calendar.from_ical(feed.body).walk("VEVENT")
    assert entry.decoded("DTSTART") == START
    assert str(entry["UID"]) == f"appointment-{booked['id']}@reservations"

    hub.integrations.post("/me/calendar-feed", token=patient.token)
    assert hub.integrations.get(f"/calendar/{token}").status == 404
    assert hub.integrations.get("/calendar/unknown-token").status == 404
