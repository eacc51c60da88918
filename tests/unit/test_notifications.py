"""Appointment e-mails, calendar data and the mailers that carry them; no sockets (SES is moto's)."""

from __future__ import annotations

import email
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import icalendar
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from reservations.adapters.mail import Attachment, FileMailer, LogMailer, SesMailer, compose
from reservations.domain.notifications import (
    KINDS,
    AppointmentNotice,
    FeedEntry,
    Party,
    calendar_feed,
    notice_document,
    notice_from_document,
    render_appointment_notice,
    webhook_disabled_notice,
)

SENDER = "Reservations <noreply@example.org>"
STAMP = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
UID = "appointment-17@reservations"
PATIENT = Party(name="Pat Smith", email="pat@example.org", timezone="America/New_York")
PROVIDER = Party(name="Dr Who", email="who@example.org", timezone="Europe/London")


def view(
    appointment_id: int = 17, start: Any = "2026-12-10T14:00:00Z", minutes: int = 30, **extra: Any
) -> dict[str, Any]:
    begin = start if isinstance(start, datetime) else datetime.fromisoformat(start)
    return {
        "id": appointment_id,
        "provider_id": 2,
        "patient_id": 3,
        "visit_type_id": 1,
        "start_time": start,
        "end_time": (begin + timedelta(minutes=minutes)).isoformat(),
        "status": "confirmed",
        "cancellation_reason": None,
        "cancelled_by": None,
        "rescheduled_from": None,
        "rescheduled_to": None,
        "note": "private note about my knee",
        **extra,
    }


def notice(kind: str, appointment: Mapping[str, Any] | None = None, **fields: Any) -> AppointmentNotice:
    to_provider = kind.startswith("provider_")
    return AppointmentNotice(
        kind=kind,
        recipient=PROVIDER if to_provider else PATIENT,
        other_party=PATIENT if to_provider else PROVIDER,
        appointment=appointment if appointment is not None else view(),
        lineage_uid=UID,
        **fields,
    )


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def invite_of(message: EmailMessage) -> tuple[EmailMessage, icalendar.Calendar]:
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert isinstance(part, EmailMessage)
    return part, icalendar.Calendar.from_ical(part.get_content())


def rendered(kind: str, appointment: Mapping[str, Any] | None = None, **fields: Any) -> EmailMessage:
    return reparse(render_appointment_notice(notice(kind, appointment, **fields), sender=SENDER, stamp=STAMP))


# --- appointment mails -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_notice_queued_as_json_renders_the_message_it_would_have_rendered(kind: str) -> None:
    original = notice(
        kind,
        view(start=datetime(2026, 12, 10, 14, 0, tzinfo=UTC), cancelled_by="provider", cancellation_reason="Ill"),
        previous=view(9, start="2026-12-09T15:00:00+00:00"),
        ics_sequence=2,
        hours_before=24,
    )
    queued = notice_from_document(json.loads(json.dumps(notice_document(original))))

    def seen(message: EmailMessage) -> tuple[str, ...]:
        part, _ = invite_of(message)
        return (str(message["Subject"]), str(message["To"]), str(message["Date"]), body_of(message), part.get_content())

    first, again = (reparse(render_appointment_notice(n, sender=SENDER, stamp=STAMP)) for n in (original, queued))
    assert seen(again) == seen(first)
    assert kind != "rescheduled" or "Previous time: Wed 9 Dec 2026, 10:00 to 10:30 EST" in body_of(again)


def test_confirmation_shows_the_patients_local_time_and_invites_in_utc() -> None:
    message = rendered("confirmed")

    assert message["Subject"] == "Appointment confirmed: Thu 10 Dec 2026, 09:00 EST with Dr Who"
    assert message["To"].addresses[0].addr_spec == "pat@example.org"
    assert message["From"].addresses[0].addr_spec == "noreply@example.org"
    assert message["Date"].datetime == STAMP
    assert message["Message-ID"].endswith("@example.org>")
    body = body_of(message)
    assert "Thu 10 Dec 2026, 09:00 to 09:30 EST" in body
    assert "#17" in body
    assert "Dr Who" in body
    assert "knee" not in body  # the patient's note stays out of mail
    part, calendar = invite_of(message)
    assert part.get_filename() == "invite.ics"
    assert part.get_param("method") == "REQUEST"
    assert part.get_content_charset() == "utf-8"
    assert calendar["PRODID"] == "-//Reservations//EN"
    assert calendar["VERSION"] == "2.0"
    assert calendar["METHOD"] == "REQUEST"
    [event] = calendar.events
    assert event.start == datetime(2026, 12, 10, 14, 0, tzinfo=UTC)
    assert event.end == datetime(2026, 12, 10, 14, 30, tzinfo=UTC)
    assert event.start.utcoffset() == event.end.utcoffset() == timedelta(0)
    assert event.DTSTAMP == STAMP
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Appointment with Dr Who"
    assert str(event["ORGANIZER"]) == "mailto:who@example.org"
    assert event["ORGANIZER"].params["CN"] == "Dr Who"
    assert [str(a) for a in event.attendees] == ["mailto:pat@example.org"]


def test_summer_time_in_london_is_shown_as_bst() -> None:
    patient = Party(name="Pat Smith", email="pat@example.org", timezone="Europe/London")
    message = reparse(
        render_appointment_notice(
            AppointmentNotice(
                kind="confirmed",
                recipient=patient,
                other_party=PROVIDER,
                appointment=view(start="2027-07-01T13:00:00Z"),
                lineage_uid=UID,
            ),
            sender=SENDER,
            stamp=STAMP,
        )
    )
    assert "Thu 1 Jul 2027, 14:00 BST" in message["Subject"]
    assert "14:00 to 14:30 BST" in body_of(message)
    _, calendar = invite_of(message)
    assert calendar.events[0].start == datetime(2027, 7, 1, 13, 0, tzinfo=UTC)


def test_aware_datetimes_and_iso_strings_render_alike() -> None:
    from_string = rendered("confirmed", view(start="2026-12-10T14:00:00Z"))
    from_datetime = rendered("confirmed", view(start=datetime(2026, 12, 10, 14, 0, tzinfo=UTC)))
    assert from_string["Subject"] == from_datetime["Subject"]
    assert invite_of(from_string)[1].events[0].start == invite_of(from_datetime)[1].events[0].start


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        rendered("confirmed", view(start="2026-12-10T14:00:00"))


def test_cancellation_withdraws_the_same_event_with_a_higher_sequence() -> None:
    confirmation = rendered("confirmed", ics_sequence=0)
    cancellation = rendered(
        "cancelled",
        view(status="cancelled", cancelled_by="provider", cancellation_reason="Clinic closed"),
        ics_sequence=1,
    )
    _, invited = invite_of(confirmation)
    part, withdrawn = invite_of(cancellation)

    assert part.get_param("method") == "CANCEL"
    assert withdrawn["METHOD"] == "CANCEL"
    [first], [second] = invited.events, withdrawn.events
    assert str(second["UID"]) == str(first["UID"]) == UID
    assert second.sequence > first.sequence
    assert str(second["STATUS"]) == "CANCELLED"
    assert second.start == first.start
    assert cancellation["Subject"].startswith("Appointment cancelled: Thu 10 Dec 2026, 09:00 EST")
    body = body_of(cancellation)
    assert "cancelled by Dr Who" in body
    assert "Reason: Clinic closed" in body


@pytest.mark.parametrize(
    ("cancelled_by", "expected"),
    [("patient", "at your request"), ("admin", "by an administrator"), ("system", "by the system")],
)
def test_cancellation_names_who_cancelled(cancelled_by: str, expected: str) -> None:
    body = body_of(rendered("cancelled", view(cancelled_by=cancelled_by), ics_sequence=1))
    assert expected in body
    assert "Reason:" not in body


def test_reschedule_shows_old_and_new_times_and_moves_the_event() -> None:
    old = view(17, start="2026-12-10T14:00:00Z", rescheduled_to=18)
    new = view(18, start="2026-12-11T16:00:00Z", rescheduled_from=17)
    message = rendered("rescheduled", new, previous=old, ics_sequence=1)

    assert message["Subject"] == "Appointment rescheduled: Fri 11 Dec 2026, 11:00 EST with Dr Who"
    body = body_of(message)
    assert "New time: Fri 11 Dec 2026, 11:00 to 11:30 EST" in body
    assert "Previous time: Thu 10 Dec 2026, 09:00 to 09:30 EST" in body
    _, calendar = invite_of(message)
    assert calendar["METHOD"] == "REQUEST"
    [event] = calendar.events
    assert (str(event["UID"]), event.sequence) == (UID, 1)
    assert event.start == datetime(2026, 12, 11, 16, 0, tzinfo=UTC)


def test_reschedule_without_the_previous_appointment_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="previous"):
        rendered("rescheduled")


def test_reminder_says_how_soon_and_carries_the_current_invitation() -> None:
    message = rendered("reminder", hours_before=24, ics_sequence=2)
    assert message["Subject"].startswith("Reminder: your appointment in 24 hours with Dr Who")
    assert "09:00 EST" in message["Subject"]
    _, calendar = invite_of(message)
    assert calendar["METHOD"] == "REQUEST"
    assert (str(calendar.events[0]["UID"]), calendar.events[0].sequence) == (UID, 2)


def test_provider_mails_name_the_patient_in_the_providers_zone() -> None:
    booked = rendered("provider_booked")
    assert booked["To"].addresses[0].addr_spec == "who@example.org"
    assert booked["Subject"] == "New booking: Thu 10 Dec 2026, 14:00 GMT with Pat Smith"
    assert "Pat Smith has booked" in body_of(booked)
    _, calendar = invite_of(booked)
    assert [str(a) for a in calendar.events[0].attendees] == ["mailto:who@example.org"]

    cancelled = rendered("provider_cancelled", view(cancelled_by="patient"), ics_sequence=1)
    assert cancelled["Subject"] == "Booking cancelled: Thu 10 Dec 2026, 14:00 GMT with Pat Smith"
    assert "cancelled by Pat Smith" in body_of(cancelled)
    assert invite_of(cancelled)[1]["METHOD"] == "CANCEL"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        rendered("postponed")


def test_names_with_line_breaks_cannot_add_headers() -> None:
    intruder = Party(name="Dr Who\r\nBcc: victim@example.net", email="who@example.org", timezone="UTC")
    message = reparse(
        render_appointment_notice(
            AppointmentNotice(kind="confirmed", recipient=PATIENT, other_party=intruder, appointment=view()),
            sender=SENDER,
            stamp=STAMP,
        )
    )
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]
    assert message["Subject"].endswith("with Dr Who Bcc: victim@example.net")
    _, calendar = invite_of(message)
    assert "\n" not in str(calendar.events[0]["SUMMARY"])


def test_webhook_owner_is_told_the_hook_was_disabled() -> None:
    message = reparse(
        webhook_disabled_notice(
            PATIENT,
            url="https://hooks.example.org/in",
            webhook_id=12,
            failing_since=datetime(2026, 12, 9, 15, 30, tzinfo=UTC),
            sender=SENDER,
        )
    )
    assert "#12" in message["Subject"]
    assert "disabled" in message["Subject"]
    body = body_of(message)
    assert "https://hooks.example.org/in" in body
    assert "Wed 9 Dec 2026, 10:30 EST" in body
    assert "24 hours" in body


# --- calendar feed -----------------------------------------------------------------------


def test_calendar_feed_publishes_one_event_per_entry() -> None:
    entries = [
        FeedEntry(
            uid=f"appointment-{n}@reservations",
            sequence=n,
            start=datetime(2026, 12, 10 + n, 14, 0, tzinfo=UTC),
            end=datetime(2026, 12, 10 + n, 14, 30, tzinfo=UTC),
            summary=f"Appointment with Dr {n}",
            description="Video visit" if n else "",
        )
        for n in range(3)
    ]
    calendar = icalendar.Calendar.from_ical(calendar_feed(entries, name="Pat's appointments", stamp=STAMP))

    assert calendar["METHOD"] == "PUBLISH"
    assert calendar["X-WR-CALNAME"] == "Pat's appointments"
    assert [str(e["UID"]) for e in calendar.events] == [e.uid for e in entries]
    assert [e.sequence for e in calendar.events] == [0, 1, 2]
    assert calendar.events[2].start == datetime(2026, 12, 12, 14, 0, tzinfo=UTC)
    assert "DESCRIPTION" not in calendar.events[0]
    assert str(calendar.events[1]["DESCRIPTION"]) == "Video visit"


def test_empty_calendar_feed_is_still_a_calendar() -> None:
    calendar = icalendar.Calendar.from_ical(calendar_feed([], name="Nothing yet", stamp=STAMP))
    assert calendar.events == []
    assert calendar["PRODID"] == "-//Reservations//EN"


# --- mailers -----------------------------------------------------------------------------

SECRET_BODY = "Reset your password: https://app.example.org/reset?token=s3cr3t-t0ken"


def invitation_message(subject: str = "Your appointment") -> EmailMessage:
    return compose(
        sender="noreply@example.org",
        to="pat@example.org",
        subject=subject,
        body=SECRET_BODY,
        attachments=[
            Attachment("invite.ics", "text/calendar; method=REQUEST", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
        ],
    )


class Recorder:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    def send(self, *, to: str, subject: str, body: str) -> None:
        raise AssertionError("FileMailer forwards whole messages")

    def send_message(self, message: EmailMessage) -> None:
        self.messages.append(message)


def test_file_mailer_writes_one_eml_per_message_and_forwards_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "nested" / "mail"
    forward = Recorder()
    mailer = FileMailer(directory, forward_to=forward)

    with caplog.at_level(logging.INFO, logger="reservations.adapters.mail"):
        mailer.send_message(invitation_message("First"))
        mailer.send_message(invitation_message("Second"))

    files = sorted(directory.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    parsed = [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    assert sorted(str(p["Subject"]) for p in parsed) == ["First", "Second"]
    for message in parsed:
        assert isinstance(message, EmailMessage)
        [part] = list(message.iter_attachments())
        assert part.get_filename() == "invite.ics"
        assert part.get_param("method") == "REQUEST"
    assert b"\r\n" in files[0].read_bytes()
    assert [m["Subject"] for m in forward.messages] == ["First", "Second"]
    assert len(caplog.records) == 2
    assert "pat@example.org" in caplog.text
    assert all(str(f) in caplog.text for f in files)
    assert "s3cr3t" not in caplog.text


def test_file_mailer_plain_send_composes_from_the_forwarding_sender(tmp_path: Path) -> None:
    class SenderRecorder(Recorder):
        sender = "clinic@example.org"

    forward = SenderRecorder()
    FileMailer(tmp_path, forward_to=forward).send(to="pat@example.org", subject="Reset", body=SECRET_BODY)

    [written] = list(tmp_path.glob("*.eml"))
    message = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    assert message["From"] == "clinic@example.org"
    assert [m["From"] for m in forward.messages] == ["clinic@example.org"]


def test_log_mailer_never_logs_the_body(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        LogMailer().send(to="pat@example.org", subject="Reset your password", body=SECRET_BODY)
        LogMailer().send_message(invitation_message())

    assert "e-mail not sent (no EMAIL_SENDER configured) to=pat@example.org subject=Reset your password" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert "VCALENDAR" not in caplog.text


@mock_aws
def test_ses_mailer_sends_the_raw_message_with_its_attachment() -> None:
    client = boto3.client("ses", region_name="us-east-1")
    client.verify_email_identity(EmailAddress="noreply@example.org")
    mailer = SesMailer(client, "noreply@example.org")

    mailer.send_message(invitation_message("Invitation"))
    mailer.send(to="pat@example.org", subject="Reset", body="reset-body-marker")

    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert [m.source for m in sent] == ["noreply@example.org", "noreply@example.org"]
    assert "pat@example.org" in sent[0].destinations
    raw = email.message_from_string(sent[0].raw_data, policy=policy.default)
    assert isinstance(raw, EmailMessage)
    assert raw["Subject"] == "Invitation"
    [part] = list(raw.iter_attachments())
    assert part.get_filename() == "invite.ics"
    assert "BEGIN:VCALENDAR" in part.get_content()
    assert "reset-body-marker" in sent[1].raw_data


@mock_aws
def test_ses_refuses_an_unverified_sender() -> None:
    client = boto3.client("ses", region_name="us-east-1")
    with pytest.raises(client.exceptions.MessageRejected):
        SesMailer(client, "noreply@example.org").send_message(invitation_message())


@mock_aws
def test_ses_delivers_to_bcc_without_revealing_it() -> None:
    client = boto3.client("ses", region_name="us-east-1")
    client.verify_email_identity(EmailAddress="noreply@example.org")
    message = invitation_message()
    message["Bcc"] = "audit@example.org"

    SesMailer(client, "noreply@example.org").send_message(message)

    [sent] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert {"pat@example.org", "audit@example.org"} <= set(sent.destinations)
    assert "audit@example.org" not in sent.raw_data
    assert message["Bcc"] == "audit@example.org"  # the caller's message is left as it was
