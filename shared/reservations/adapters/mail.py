"""Outgoing e-mail: Amazon SES when a sender is configured, the log otherwise."""

from __future__ import annotations

import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, body: str) -> None: ...


class LogMailer:
    """Local development: the message (reset link included) goes to the log."""

    def send(self, *, to: str, subject: str, body: str) -> None:
        logger.warning("e-mail not sent (no EMAIL_SENDER configured) to=%s subject=%s\n%s", to, subject, body)


class SesMailer:
    def __init__(self, client: Any, sender: str) -> None:
        self._client = client
        self._sender = sender

    def send(self, *, to: str, subject: str, body: str) -> None:
        self._client.send_email(
            Source=self._sender,
            Destination={"ToAddresses": [to]},
            Message={
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
            },
        )
