"""auth function: accounts and authentication."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Form, Path, Query, Request, Response, status

from reservations.composition import Container
from reservations.domain.errors import Unprocessable
from reservations.http import client_limits
from reservations.http.app import create_app
from reservations.http.client_limits import enforce, source_ip
from reservations.http.deps import Caller, OptionalCaller
from reservations.http.integration_schemas import MePatch
from reservations.http.lambda_entry import make_lambda_handler
from reservations.http.privacy_schemas import EraseRequest, ExportOut
from reservations.http.schemas import (
    MAX_ID,
    MOMENT_PATTERN,
    AuditPageOut,
    LogoutRequest,
    MessageOut,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    TokenOut,
    UserOut,
    VerificationConfirm,
)
from reservations.usecases.audit import AuditFilter

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations auth", container)
client_limits.install(app)
accounts = container.accounts

Cursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page")]


def moment(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"{value!r} is not a date or an RFC 3339 time", code="invalid_date_range") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


RESET_REQUESTED = "if an account exists for this e-mail, a reset message has been sent"


@app.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: RegisterRequest, caller: OptionalCaller, request: Request) -> UserOut:
    enforce(request, container, "register", account=str(body.email))
    user = accounts.register(
        caller, name=body.name, email=str(body.email), password=body.password, role=body.role, timezone=body.timezone
    )
    return UserOut.model_validate(user)


@app.post("/token", response_model=TokenOut)
async def token(
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    request: Request,
) -> TokenOut:
    enforce(request, container, "token", account=username)
    pair = accounts.login(username, password, source_ip=source_ip(request))
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@app.post("/token/refresh", response_model=TokenOut)
async def refresh(body: RefreshRequest) -> TokenOut:
    pair = accounts.refresh(body.refresh_token)
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@app.post("/reset-password", response_model=MessageOut)
async def reset_password(body: ResetPasswordRequest, caller: Caller, request: Request) -> MessageOut:
    enforce(request, container, "reset-password", account=f"user:{caller.user_id}")
    email = str(body.email) if body.email is not None else None
    accounts.reset_password(
        caller,
        email=email,
        current_password=body.current_password,
        new_password=body.new_password,
        source_ip=source_ip(request),
    )
    return MessageOut(message="password updated; earlier tokens no longer work")


@app.post("/password-reset/request", status_code=status.HTTP_202_ACCEPTED, response_model=MessageOut)
async def password_reset_request(body: PasswordResetRequest, request: Request) -> MessageOut:
    enforce(request, container, "password-reset", account=str(body.email))
    accounts.request_password_reset(str(body.email))
    return MessageOut(message=RESET_REQUESTED)


@app.post("/password-reset/confirm", response_model=MessageOut)
async def password_reset_confirm(body: PasswordResetConfirm, request: Request) -> MessageOut:
    enforce(request, container, "password-reset")
    accounts.confirm_password_reset(body.token, body.new_password)
    return MessageOut(message="password updated; sign in with the new password")


@app.get("/me", response_model=UserOut)
async def me(caller: Caller) -> UserOut:
    return UserOut.model_validate(accounts.me(caller))


@app.patch("/me", response_model=UserOut)
async def patch_me(body: MePatch, caller: Caller) -> UserOut:
    return UserOut.model_validate(accounts.update_me(caller, body.changes()))


@app.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout(body: LogoutRequest) -> Response:
    accounts.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout_all(caller: Caller) -> Response:
    accounts.logout_everywhere(caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.post("/email-verification/request", status_code=status.HTTP_202_ACCEPTED, response_model=MessageOut)
async def email_verification_request(caller: Caller, request: Request) -> MessageOut:
    enforce(request, container, "email-verification", account=f"user:{caller.user_id}")
    accounts.request_email_verification(caller)
    return MessageOut(message="if the address is not verified yet, a confirmation token has been sent to it")


@app.post("/email-verification/confirm", response_model=UserOut)
async def email_verification_confirm(body: VerificationConfirm, request: Request) -> UserOut:
    enforce(request, container, "email-verification")
    return UserOut.model_validate(accounts.confirm_email_verification(body.token))


@app.get("/audit", response_model=AuditPageOut)
async def audit_log(
    caller: Caller,
    actor_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    target_type: Annotated[
        Literal["user", "provider", "appointment", "visit_type", "availability", "webhook"] | None, Query()
    ] = None,
    target_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z_.]+$")] = None,
    start: Annotated[
        str | None, Query(alias="from", pattern=MOMENT_PATTERN, description="inclusive; UTC unless an offset")
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", pattern=MOMENT_PATTERN, description="exclusive; UTC unless an offset")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page")
    ] = None,
) -> AuditPageOut:
    where = AuditFilter(actor_id, target_type, target_id, action, moment(start), moment(end))
    page = container.audit.search(caller, where, limit=limit, cursor=cursor)
    return AuditPageOut.model_validate({"items": page.items, "next_cursor": page.next_cursor})


@app.get("/me/activity", response_model=AuditPageOut)
async def my_activity(
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page")
    ] = None,
) -> AuditPageOut:
    page = container.audit.activity(caller, limit=limit, cursor=cursor)
    return AuditPageOut.model_validate({"items": page.items, "next_cursor": page.next_cursor})


@app.get("/me/export", response_model=ExportOut)
async def export_me(caller: Caller) -> ExportOut:
    return ExportOut.model_validate(container.privacy.export_own(caller))


@app.get("/users/{user_id}/export", response_model=ExportOut)
async def export_user(user_id: Annotated[int, Path(ge=1, le=MAX_ID)], caller: Caller) -> ExportOut:
    return ExportOut.model_validate(container.privacy.export_user(caller, user_id))


@app.delete("/me", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_me(body: EraseRequest, caller: Caller, request: Request) -> Response:
    enforce(request, container, "delete-account", account=f"user:{caller.user_id}")
    container.privacy.erase_own(caller, password=body.password, source_ip=source_ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_user(user_id: Annotated[int, Path(ge=1, le=MAX_ID)], caller: Caller) -> Response:
    container.privacy.erase_user(caller, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


handler = make_lambda_handler(app, container.settings)
