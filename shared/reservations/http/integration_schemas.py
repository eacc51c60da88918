"""Request and response models of the integrations function (webhooks, calendar feeds)
and of `PATCH /me`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from reservations.adapters.db import Webhook
from reservations.domain.events import SUBSCRIBABLE
from reservations.http.schemas import STRIPPED_NAME_PATTERN, DisplayText, TimeZoneName

EventName = Literal[*SUBSCRIBABLE, "*"]  # type: ignore[valid-type]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f]+$",
        description="https in production; http to loopback only where WEBHOOK_ALLOW_PRIVATE is on",
    )
    events: list[EventName] = Field(min_length=1, max_length=len(SUBSCRIBABLE) + 1)
    description: DisplayText | None = Field(default=None, max_length=500)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str | None
    active: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            id=webhook.id,
            url=webhook.url,
            events=list(webhook.events),
            description=webhook.description,
            active=webhook.active,
            created_at=webhook.created_at,
            disabled_at=webhook.disabled_at,
        )


class WebhookWithSecretOut(WebhookOut):
    secret: str = Field(description="Standard Webhooks signing secret (whsec_...); shown only in this response")


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    attempts: int
    status: Literal["pending", "succeeded", "failed"]
    last_response_status: int | None
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime


class CalendarFeedOut(BaseModel):
    url: str = Field(description="the feed; the token in it is the credential, so keep it private")


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: (
        Annotated[DisplayText, StringConstraints(min_length=1, max_length=200, pattern=STRIPPED_NAME_PATTERN)]
        | SkipJsonSchema[None]
    ) = None
    timezone: TimeZoneName | SkipJsonSchema[None] = None
    notify_email: StrictBool | SkipJsonSchema[None] = Field(
        default=None, description="false stops appointment notifications (never security mail)"
    )

    @model_validator(mode="after")
    def _not_null(self) -> MePatch:
        for field in self.model_fields_set:
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_unset=True)
