"""auth function: accounts and authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, status

from reservations.errors import InvalidRequest
from reservations.http.app import create_app
from reservations.http.deps import AccountsDep, CurrentUser, OptionalUser, RuntimeDep
from reservations.http.lambda_entry import make_lambda_handler
from reservations.http.schemas import (
    MessageOut,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    TokenOut,
    UserOut,
)

app = create_app("Reservations auth")

RESET_REQUESTED = "if an account exists for this e-mail, a reset message has been sent"


@app.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def register(body: RegisterRequest, accounts: AccountsDep, actor: OptionalUser) -> UserOut:
    user = accounts.register(
        name=body.name,
        email=str(body.email),
        password=body.password,
        role=body.role,
        timezone=body.timezone,
        actor=actor,
    )
    return UserOut.model_validate(user)


@app.post("/token", response_model=TokenOut)
def token(
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    accounts: AccountsDep,
) -> TokenOut:
    pair = accounts.login(username, password)
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@app.post("/token/refresh", response_model=TokenOut)
def refresh(body: RefreshRequest, accounts: AccountsDep) -> TokenOut:
    pair = accounts.refresh(body.refresh_token)
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@app.post("/reset-password", response_model=MessageOut)
def reset_password(body: ResetPasswordRequest, user: CurrentUser, accounts: AccountsDep) -> MessageOut:
    if body.email is not None and (user.role == "admin" or str(body.email).lower() != user.email.lower()):
        accounts.admin_set_password(user, email=str(body.email), new_password=body.new_password)
    elif body.current_password is not None:
        accounts.change_own_password(user, current_password=body.current_password, new_password=body.new_password)
    else:
        raise InvalidRequest(
            "give current_password to change your own password, or email (admins) to set another's",
            code="missing_field",
        )
    return MessageOut(message="password updated; earlier tokens no longer work")


@app.post("/password-reset/request", status_code=status.HTTP_202_ACCEPTED, response_model=MessageOut)
def password_reset_request(body: PasswordResetRequest, accounts: AccountsDep, runtime: RuntimeDep) -> MessageOut:
    accounts.request_password_reset(
        str(body.email), mailer=runtime.mailer, reset_url=runtime.settings.password_reset_url
    )
    return MessageOut(message=RESET_REQUESTED)


@app.post("/password-reset/confirm", response_model=MessageOut)
def password_reset_confirm(body: PasswordResetConfirm, accounts: AccountsDep) -> MessageOut:
    accounts.confirm_password_reset(body.token, body.new_password)
    return MessageOut(message="password updated; sign in with the new password")


@app.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


handler = make_lambda_handler(app, function="auth")
