"""Request and response bodies of the privacy operations: data export and account erasure."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EraseRequest(BaseModel):
    """Deleting one's own account: the current password again."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="the current password (re-authentication)")


class ExportOut(BaseModel):
    """Everything held about one user; of other people only their ids."""

    generated_at: dt.datetime
    profile: dict[str, Any] = Field(description="name, e-mail, role, time zone and the provider profile")
    notification_settings: dict[str, Any]
    appointments: list[dict[str, Any]] = Field(
        description="as patient or provider (`role`), each with its `history` of transitions"
    )
    availability: dict[str, Any] = Field(description="weekly `periods` and dated `days` (providers)")
    visit_types: list[dict[str, Any]]
    webhooks: list[dict[str, Any]] = Field(description="endpoints without their secrets")
    audit_entries: list[dict[str, Any]] = Field(description="audit entries by or about the user")
