"""Use cases: one per thing a client or a schedule asks of the system. Each opens its own
unit of work, checks who is asking, applies idempotency, calls the domain and commits
before it returns, so the HTTP edge only parses and shapes. Built by the composition
root (`reservations.composition.Container`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from reservations.adapters.mail import Mailer
    from reservations.adapters.security import PasswordHasher, TokenCodec
    from reservations.adapters.webhook_transport import WebhookTransport
    from reservations.config import Settings
    from reservations.domain.accounts import AccountPolicy
    from reservations.domain.policy import BookingPolicy
    from reservations.domain.scheduling import DayStore
    from reservations.usecases.accounts import AccountUseCases
    from reservations.usecases.events import EventUseCases


class Resources(Protocol):
    """What use cases need from the composition root."""

    settings: Settings
    clock: Callable[[], datetime]

    def now(self) -> datetime: ...
    def count(self, name: str, value: float = 1) -> None: ...
    def unit_of_work(self) -> AbstractContextManager[Session]: ...
    def read_only(self) -> AbstractContextManager[Session]: ...
    def token_codec(self) -> TokenCodec: ...
    def publish_after_commit(self) -> None: ...
    @property
    def hasher(self) -> PasswordHasher: ...
    @property
    def mailer(self) -> Mailer: ...
    @property
    def day_store(self) -> DayStore: ...
    @property
    def account_policy(self) -> AccountPolicy: ...
    @property
    def booking_policy(self) -> BookingPolicy: ...
    @property
    def webhook_transport(self) -> WebhookTransport: ...
    @property
    def events(self) -> EventUseCases: ...
    @property
    def accounts(self) -> AccountUseCases: ...
