"""The e-mails the system sends about appointments and integrations, and the calendar feed.

Pure rendering: no I/O beyond the time-zone database. Times are shown in the recipient's
zone with its abbreviation; calendar data is UTC. Every invitation of one reschedule chain
shares the caller's ``lineage_uid`` and a rising ``ics_sequence``, so calendar clients
update or remove the one event instead of piling up copies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import STATUS, Calendar, Event, vCalAddress

from reservations.adapters.mail import Attachment, compose

KINDS = ("confirmed", "cancelled", "rescheduled", "reminder", "provider_booked", "provider_cancelled")
PRODID = "-//Reservations//EN"
INVITE_FILENAME = "invite.ics"
WEBHOOK_FAILURE_WINDOW_HOURS = 24

_CANCELLATIONS = frozenset({"cancelled", "provider_cancelled"})
_TO_PROVIDER = frozenset({"provider_booked", "provider_cancelled"})
# Fixed English names: strftime's %a/%b follow the process locale.
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Party:
    name: str
    email: str
    timezone: str  # IANA zone; times in the message are shown in this zone, with its abbreviation


@dataclass(frozen=True)
class AppointmentNotice:
    kind: str  # one of KINDS
    recipient: Party
    other_party: Party  # the provider for patient mails, the patient for provider mails
    appointment: Mapping[str, Any]  # the API view; start_time/end_time aware datetimes or ISO-8601 strings
    previous: Mapping[str, Any] | None = None  # for "rescheduled": the old appointment view
    lineage_uid: str = ""  # iCalendar UID, stable across a reschedule chain
    ics_sequence: int = 0  # iCalendar SEQUENCE, rising with each change of the lineage
    hours_before: int | None = None  # for "reminder"


def notice_document(notice: AppointmentNotice) -> dict[str, Any]:
    """The notice as JSON-ready data, queued in place of the message it renders to (see
    ``notice_from_document``); datetimes in the appointment views become ISO-8601 strings."""
    document = asdict(notice)
    document["appointment"] = _json_ready(notice.appointment)
    document["previous"] = None if notice.previous is None else _json_ready(notice.previous)
    return document


def notice_from_document(document: Mapping[str, Any]) -> AppointmentNotice:
    """The notice ``notice_document`` wrote; a key it does not know is refused."""
    parties = {"recipient": Party(**document["recipient"]), "other_party": Party(**document["other_party"])}
    return AppointmentNotice(**{**document, **parties})


def _json_ready(view: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in view.items()}


@dataclass(frozen=True)
class FeedEntry:
    uid: str
    sequence: int
    start: datetime
    end: datetime
    summary: str
    description: str = ""


# --- appointment mails -------------------------------------------------------------------


def render_appointment_notice(notice: AppointmentNotice, *, sender: str, stamp: datetime | None = None) -> EmailMessage:
    """The e-mail for ``notice``, with an iCalendar invitation (REQUEST) or cancellation
    (CANCEL) attached. ``stamp`` is the DTSTAMP and the Date header (default: now)."""
    if notice.kind not in KINDS:
        raise ValueError(f"unknown notice kind '{notice.kind}'")
    stamp = _aware(stamp or datetime.now(UTC), "stamp")
    zone = _zone(notice.recipient.timezone)
    start, end = _span(notice.appointment)
    other = _clean(notice.other_party.name)
    when = _when(start, end, zone)
    reference = f"Appointment: #{notice.appointment['id']}"

    if notice.kind == "confirmed":
        subject = f"Appointment confirmed: {_moment(start, zone)} with {other}"
        lines = [f"Your appointment with {other} is confirmed.", "", f"When: {when}", reference]
    elif notice.kind == "cancelled":
        subject = f"Appointment cancelled: {_moment(start, zone)} with {other}"
        lines = [
            f"Your appointment with {other} has been cancelled{_cancelled_by(notice)}.",
            "",
            f"When: {when}",
            reference,
            *_reason(notice.appointment),
        ]
    elif notice.kind == "rescheduled":
        if notice.previous is None:
            raise ValueError("a rescheduled notice needs the previous appointment")
        old_start, old_end = _span(notice.previous)
        subject = f"Appointment rescheduled: {_moment(start, zone)} with {other}"
        lines = [
            f"Your appointment with {other} has been moved.",
            "",
            f"New time: {when}",
            f"Previous time: {_when(old_start, old_end, zone)}",
            f"{reference} (replaces #{notice.previous['id']})",
        ]
    elif notice.kind == "reminder":
        soon = "soon" if notice.hours_before is None else f"in {_hours(notice.hours_before)}"
        subject = f"Reminder: your appointment {soon} with {other}, {_moment(start, zone)}"
        lines = [f"This is a reminder of your appointment with {other} {soon}.", "", f"When: {when}", reference]
    elif notice.kind == "provider_booked":
        subject = f"New booking: {_moment(start, zone)} with {other}"
        lines = [f"{other} has booked an appointment with you.", "", f"When: {when}", reference]
    else:  # provider_cancelled
        subject = f"Booking cancelled: {_moment(start, zone)} with {other}"
        lines = [
            f"The appointment with {other} has been cancelled{_cancelled_by(notice)}.",
            "",
            f"When: {when}",
            reference,
            *_reason(notice.appointment),
        ]

    calendar_note = (
        "The attached file removes it from your calendar."
        if notice.kind in _CANCELLATIONS
        else "The attached invitation adds it to your calendar."
    )
    body = _letter(notice.recipient, [*lines, "", f"Times are shown in {_zone_name(zone)}.", calendar_note])
    invite = Attachment(
        filename=INVITE_FILENAME,
        content_type=f"text/calendar; method={_method(notice.kind)}",
        data=_invitation(notice, start, end, stamp),
    )
    return compose(
        sender=sender,
        to=_address(notice.recipient),
        subject=subject,
        body=body,
        attachments=[invite],
        date=stamp,
    )


def _method(kind: str) -> str:
    return "CANCEL" if kind in _CANCELLATIONS else "REQUEST"


def _invitation(notice: AppointmentNotice, start: datetime, end: datetime, stamp: datetime) -> bytes:
    cancelled = notice.kind in _CANCELLATIONS
    # The recipient is the attendee, so the invitation lands in their calendar as an
    # accepted meeting; no reply is wanted, the booking is already made.
    organizer = vCalAddress.new(notice.other_party.email, cn=_clean(notice.other_party.name))
    attendee = vCalAddress.new(
        notice.recipient.email,
        cn=_clean(notice.recipient.name),
        role="REQ-PARTICIPANT",
        partstat=None if cancelled else "ACCEPTED",
        rsvp=False,
    )
    event = Event.new(
        uid=notice.lineage_uid or f"appointment-{notice.appointment['id']}@reservations",
        sequence=notice.ics_sequence,
        stamp=stamp.astimezone(UTC),
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        summary=f"Appointment with {_clean(notice.other_party.name)}",
        description=f"Appointment #{notice.appointment['id']}",
        organizer=organizer,
        attendees=[attendee],
        status=STATUS.CANCELLED if cancelled else STATUS.CONFIRMED,
    )
    calendar = _calendar(_method(notice.kind))
    calendar.add_component(event)
    return _serialise(calendar)


def _cancelled_by(notice: AppointmentNotice) -> str:
    actor = notice.appointment.get("cancelled_by")
    recipient_role = "provider" if notice.kind in _TO_PROVIDER else "patient"
    if actor == recipient_role:
        return " at your request"
    if actor in ("patient", "provider"):
        return f" by {_clean(notice.other_party.name)}"
    if actor == "admin":
        return " by an administrator"
    if actor == "system":
        return " by the system"
    return ""


def _reason(appointment: Mapping[str, Any]) -> list[str]:
    reason = _clean(str(appointment.get("cancellation_reason") or ""))
    return [f"Reason: {reason}"] if reason else []


def _hours(hours: int) -> str:
    return "1 hour" if hours == 1 else f"{hours} hours"


# --- integrations ------------------------------------------------------------------------


def webhook_disabled_notice(
    recipient: Party,
    *,
    url: str,
    webhook_id: int,
    failing_since: datetime,
    sender: str,
    stamp: datetime | None = None,
) -> EmailMessage:
    """Tells a webhook's owner that every delivery failed for a day and the hook was disabled."""
    zone = _zone(recipient.timezone)
    since = _aware(failing_since, "failing_since")
    body = _letter(
        recipient,
        [
            f"Every delivery to your webhook #{webhook_id} has failed since {_moment(since, zone)}.",
            f"After {WEBHOOK_FAILURE_WINDOW_HOURS} hours of failures it has been disabled:",
            "no further events are sent to it.",
            "",
            f"Endpoint: {_clean(url)}",
            "",
            "Once the endpoint answers again, re-enable the webhook to resume deliveries.",
        ],
    )
    return compose(
        sender=sender,
        to=_address(recipient),
        subject=f"Webhook #{webhook_id} disabled after {WEBHOOK_FAILURE_WINDOW_HOURS} hours of failed deliveries",
        body=body,
        date=_aware(stamp or datetime.now(UTC), "stamp"),
    )


def calendar_feed(entries: Sequence[FeedEntry], *, name: str, stamp: datetime) -> bytes:
    """An RFC 5545 calendar (METHOD:PUBLISH) for subscription by calendar clients."""
    calendar = _calendar("PUBLISH")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", _clean(name))
    stamp = _aware(stamp, "stamp").astimezone(UTC)
    for entry in entries:
        event = Event.new(
            uid=entry.uid,
            sequence=entry.sequence,
            stamp=stamp,
            start=_aware(entry.start, "start").astimezone(UTC),
            end=_aware(entry.end, "end").astimezone(UTC),
            summary=entry.summary,
            description=entry.description or None,
        )
        calendar.add_component(event)
    return _serialise(calendar)


def _serialise(calendar: Calendar) -> bytes:
    data: bytes = calendar.to_ical()  # untyped in icalendar
    return data


def _calendar(method: str) -> Calendar:
    # Not Calendar.new(): it adds a random calendar UID, which would make the output
    # differ on every render of the same data.
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    return calendar


# --- text helpers ------------------------------------------------------------------------


def _letter(recipient: Party, lines: Sequence[str]) -> str:
    return "\n".join([f"Hello {_clean(recipient.name)},", "", *lines, ""])


def _clean(text: str) -> str:
    """One line: user-supplied names must not add header lines or fake body lines."""
    return " ".join(text.split())


def _address(party: Party) -> str:
    return str(Address(display_name=_clean(party.name), addr_spec=party.email.strip()))


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # A stale zone name must not stop the mail; the abbreviation shown keeps it honest.
        return UTC


def _zone_name(zone: tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else "UTC"


def _moment(value: datetime, zone: tzinfo) -> str:
    """e.g. "Thu 10 Dec 2026, 09:00 EST"."""
    local = value.astimezone(zone)
    return f"{_date(local)}, {local:%H:%M} {local.tzname()}"


def _date(local: datetime) -> str:
    return f"{_WEEKDAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year}"


def _when(start: datetime, end: datetime, zone: tzinfo) -> str:
    """e.g. "Thu 10 Dec 2026, 09:00 to 09:30 EST"; both ends in full when the date or the
    zone's offset changes in between."""
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if local_start.date() == local_end.date() and local_start.tzname() == local_end.tzname():
        return f"{_date(local_start)}, {local_start:%H:%M} to {local_end:%H:%M} {local_end.tzname()}"
    return f"{_moment(start, zone)} to {_moment(end, zone)}"


def _span(appointment: Mapping[str, Any]) -> tuple[datetime, datetime]:
    return _instant(appointment["start_time"], "start_time"), _instant(appointment["end_time"], "end_time")


def _instant(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"{field} must be a datetime or an ISO-8601 string, not {type(value).__name__}")
    return _aware(value, field)


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must carry a time zone")
    return value
