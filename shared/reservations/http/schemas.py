"""Request and response models shared by the functions (the public API contract)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from reservations.domain.accounts import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH


def _printable(value: str) -> str:
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise ValueError("must not contain control characters")
    return value


# Names are shown to other users: no NUL (Postgres cannot store it) and no control characters.
DisplayText = Annotated[str, AfterValidator(_printable)]


class ErrorBody(BaseModel):
    detail: str
    code: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """FastAPI's schema-error list, or our `{detail, code}` for rules beyond the schema."""

    detail: list[ValidationIssue] | str
    code: str | None = None


class RegisterRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: DisplayText = Field(min_length=1, max_length=200)
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    role: Literal["patient", "provider", "admin"]
    timezone: str = Field(default="UTC", min_length=1, max_length=64)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    role: str
    timezone: str


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class ResetPasswordRequest(BaseModel):
    """Either the caller's own change (`current_password`) or an admin's (`email`)."""

    new_password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    current_password: str | None = Field(default=None, max_length=PASSWORD_MAX_LENGTH)
    email: EmailStr | None = Field(default=None, max_length=320)


class PasswordResetRequest(BaseModel):
    email: EmailStr = Field(max_length=320)


class PasswordResetConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=512)
    new_password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)


class MessageOut(BaseModel):
    message: str
