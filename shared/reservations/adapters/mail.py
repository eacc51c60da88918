"""Outgoing e-mail: Amazon SES when a sender is configured, .eml files and/or the log otherwise.

Every mailer takes a whole RFC 5322 message (``send_message``) so attachments such as
calendar invitations survive; ``send`` is the plain-text shortcut the older callers use."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

LOCAL_SENDER = "reservations@localhost"


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, body: str) -> None: ...

    def send_message(self, message: EmailMessage) -> None: ...


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # e.g. "text/calendar; method=REQUEST"
    data: bytes


def compose(
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    attachments: Sequence[Attachment] = (),
    date: datetime | None = None,
) -> EmailMessage:
    """A plain-text message with optional attachments. Header values with line breaks are
    refused by the e-mail policy; the subject is folded to one line first because it is
    the header most often built from user-supplied names."""
    message = EmailMessage(policy=policy.default)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = " ".join(subject.split())
    message["Date"] = (date or datetime.now(UTC)).astimezone(UTC)
    # An explicit domain: without one make_msgid asks the resolver for this host's name.
    message["Message-ID"] = make_msgid(domain=_domain_of(sender))
    message.set_content(body)
    for attachment in attachments:
        _attach(message, attachment)
    return message


def _domain_of(address: str) -> str:
    _, addr_spec = parseaddr(address)
    domain = addr_spec.rpartition("@")[2]
    return domain or "localhost"


def _attach(message: EmailMessage, attachment: Attachment) -> None:
    mime_type, *raw_params = (part.strip() for part in attachment.content_type.split(";"))
    maintype, _, subtype = mime_type.lower().partition("/")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, _, value = raw.partition("=")
        if key.strip() and key.strip().lower() != "charset":
            params[key.strip()] = value.strip().strip('"')
    if maintype == "text":
        # As text, so the part carries charset=utf-8 (calendar clients need it for names).
        message.add_attachment(
            attachment.data.decode("utf-8"), subtype=subtype, filename=attachment.filename, params=params
        )
    else:
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename, params=params
        )


def _recipients(message: EmailMessage) -> list[str]:
    fields = [str(value) for header in ("To", "Cc", "Bcc") for value in message.get_all(header, [])]
    return [addr for _, addr in getaddresses(fields) if addr]


class _ComposingMailer(ABC):
    sender: str

    def send(self, *, to: str, subject: str, body: str) -> None:
        self.send_message(compose(sender=self.sender, to=to, subject=subject, body=body))

    @abstractmethod
    def send_message(self, message: EmailMessage) -> None: ...


class LogMailer(_ComposingMailer):
    """No sender and no mail directory: only the fact of the message is logged. Never the
    body: a password-reset mail carries a live token."""

    def __init__(self, *, sender: str = LOCAL_SENDER) -> None:
        self.sender = sender

    def send_message(self, message: EmailMessage) -> None:
        logger.warning(
            "e-mail not sent (no EMAIL_SENDER configured) to=%s subject=%s", message["To"], message["Subject"]
        )


class SesMailer(_ComposingMailer):
    def __init__(self, client: Any, sender: str) -> None:
        self._client = client
        self.sender = sender

    def send_message(self, message: EmailMessage) -> None:
        recipients = _recipients(message)
        if not recipients:
            raise ValueError("message has no recipients")
        if "Bcc" in message:
            # Bcc recipients are in Destinations; the header itself must not reach anyone.
            message = _copy(message)
            del message["Bcc"]
        # Raw, not send_email: send_email cannot carry attachments.
        self._client.send_raw_email(
            Source=self.sender,
            Destinations=recipients,
            RawMessage={"Data": message.as_bytes(policy=policy.SMTP)},
        )


def _copy(message: EmailMessage) -> EmailMessage:
    copied = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(copied, EmailMessage)
    return copied


class FileMailer(_ComposingMailer):
    """Writes each message as one .eml file (local development: open it in a mail client),
    then hands it to ``forward_to`` when there is one."""

    def __init__(self, directory: Path, forward_to: Mailer | None = None, *, sender: str | None = None) -> None:
        self.directory = directory
        self._forward_to = forward_to
        # Forwarded mail must come From the address the forwarding mailer is allowed to use.
        self.sender = sender or getattr(forward_to, "sender", None) or LOCAL_SENDER

    def send_message(self, message: EmailMessage) -> None:
        path = self._write(message)
        logger.info("e-mail written to=%s path=%s", message["To"], path)
        if self._forward_to is not None:
            self._forward_to.send_message(message)

    def _write(self, message: EmailMessage) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.eml"
        target = self.directory / name
        # A hidden temporary name in the same directory: whoever watches for *.eml never
        # sees half a message, and os.replace stays on one file system.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes(policy=policy.SMTP))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return target
