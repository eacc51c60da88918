"""Accounts and authentication: registration, login with lockout, rotating refresh
tokens, password change and the e-mailed reset flow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from reservations.adapters.db import LoginFailure, PasswordResetToken, RefreshToken, User, sqlstate
from reservations.adapters.security import AccessClaims, PasswordHasher, TokenCodec, opaque_token, token_digest
from reservations.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unprocessable,
)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
SELF_SERVICE_ROLES = ("patient", "provider")
INVALID_CREDENTIALS = "incorrect e-mail or password"


@dataclass(frozen=True)
class AccountPolicy:
    access_ttl: timedelta
    refresh_ttl: timedelta
    login_max_failures: int
    login_lockout: timedelta
    reset_ttl: timedelta


@dataclass(frozen=True)
class ResetMessage:
    """A reset token to send to its owner (only ever to them, never to a log or event)."""

    to: str
    subject: str
    body: str


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def email_key(email: str) -> str:
    return email.strip().lower()


def validate_password(password: str) -> None:
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise Unprocessable(
            f"password must be {PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters", code="invalid_password"
        )


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a tzdata folder: OSError
        raise Unprocessable(f"unknown time zone '{name}'", code="invalid_timezone") from None
    return name


def current_user(session: Session, claims: AccessClaims) -> User:
    """The user a verified access token speaks for, unless the token was revoked since
    (a password change bumps ``token_version``) or the role no longer matches."""
    user = session.get(User, claims.user_id)
    if user is None or user.token_version != claims.token_version or user.role != claims.role:
        raise Unauthenticated("token has been revoked", code="token_revoked")
    return user


class AccountService:
    def __init__(
        self,
        session: Session,
        *,
        hasher: PasswordHasher,
        codec: TokenCodec | None,
        policy: AccountPolicy,
        now: datetime,
    ) -> None:
        self.session = session
        self.hasher = hasher
        self.codec = codec
        self.policy = policy
        self.now = now

    # --- registration -------------------------------------------------------------

    def register(
        self, *, name: str, email: str, password: str, role: str, timezone: str = "UTC", actor: User | None = None
    ) -> User:
        if role not in SELF_SERVICE_ROLES and not (role == "admin" and actor is not None and actor.role == "admin"):
            raise Forbidden("only an admin can create admin accounts", code="admin_required")
        return self._create_user(name=name, email=email, password=password, role=role, timezone=timezone)

    def create_first_admin(self, *, name: str, email: str, password: str) -> User:
        """Operator bootstrap (the CLI and the migrate function): needs no admin token, and
        is refused once any admin exists; concurrent bootstraps are serialised, so two at
        once cannot both find "no admin yet"."""
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('reservations:create-first-admin'))"))
        if self.session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None:
            raise Conflict(
                "an admin exists already; admins create further admins with POST /register", code="admin_exists"
            )
        return self._create_user(name=name, email=email, password=password, role="admin", timezone="UTC")

    def _create_user(self, *, name: str, email: str, password: str, role: str, timezone: str) -> User:
        validate_password(password)
        validate_timezone(timezone)
        if self._find_by_email(email) is not None:
            raise Conflict("an account with this e-mail already exists", code="email_taken")
        user = User(
            name=name.strip(),
            email=email.strip(),
            role=role,
            timezone=timezone,
            password_hash=self.hasher.hash(password),
            token_version=0,
        )
        self.session.add(user)
        try:
            self.session.flush()
        except DBAPIError as error:  # a concurrent registration won the unique index
            if sqlstate(error) == "23505":
                raise Conflict("an account with this e-mail already exists", code="email_taken") from None
            raise
        return user  # a provider gets its default visit type from a trigger (migration 0003)

    # --- tokens --------------------------------------------------------------------

    def login(self, email: str, password: str) -> TokenPair:
        key = email_key(email)
        # Serialise attempts on one account so parallel guesses cannot exceed the limit.
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "login:" + key})
        self._refuse_if_locked_out(key)
        user = self._find_by_email(email)
        if not self.hasher.verify(password, user.password_hash if user else None) or user is None:
            # The failure must count even though the request fails.
            self.session.add(LoginFailure(email_key=key, failed_at=self.now))
            raise Unauthenticated(INVALID_CREDENTIALS, code="invalid_credentials", keep_changes=True)
        self.session.execute(delete(LoginFailure).where(LoginFailure.email_key == key))
        return self._issue_pair(user, family_id=str(uuid.uuid4()))

    def _refuse_if_locked_out(self, key: str) -> None:
        window_start = self.now - self.policy.login_lockout
        recent = self.session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.email_key == key, LoginFailure.failed_at > window_start)
            .order_by(LoginFailure.failed_at.desc())
            .limit(self.policy.login_max_failures)
        ).all()
        if len(recent) >= self.policy.login_max_failures:
            unlock_at = recent[-1] + self.policy.login_lockout
            retry_after = int((unlock_at - self.now).total_seconds()) + 1
            raise TooManyRequests(
                "too many failed logins for this account; try again later",
                retry_after_seconds=retry_after,
                code="login_locked",
            )

    def refresh(self, refresh_token: str) -> TokenPair:
        stored = self.session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == token_digest(refresh_token)).with_for_update()
        ).first()
        if stored is None:
            raise Unauthenticated("invalid refresh token", code="invalid_refresh_token")
        if stored.used_at is not None or stored.revoked_at is not None:
            # Reuse means the token leaked: revoke the whole family, both copies die.
            self.session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == stored.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=self.now)
            )
            raise Unauthenticated("refresh token already used", code="refresh_token_reused", keep_changes=True)
        user = self.session.get(User, stored.user_id)
        if stored.expires_at <= self.now or user is None or user.token_version != stored.token_version:
            raise Unauthenticated("refresh token expired or revoked", code="invalid_refresh_token")
        stored.used_at = self.now
        return self._issue_pair(user, family_id=stored.family_id)

    def _issue_pair(self, user: User, *, family_id: str) -> TokenPair:
        refresh_token = opaque_token()
        self.session.add(
            RefreshToken(
                token_hash=token_digest(refresh_token),
                user_id=user.id,
                family_id=family_id,
                token_version=user.token_version,
                issued_at=self.now,
                expires_at=self.now + self.policy.refresh_ttl,
            )
        )
        assert self.codec is not None, "signing tokens needs a codec"
        access = self.codec.issue_access(
            user_id=user.id, role=user.role, token_version=user.token_version, now=self.now, ttl=self.policy.access_ttl
        )
        return TokenPair(access, refresh_token, int(self.policy.access_ttl.total_seconds()))

    # --- passwords -----------------------------------------------------------------

    def reset_password(
        self, actor: User, *, email: str | None, current_password: str | None, new_password: str
    ) -> None:
        """A user's own change (``current_password``), or an admin's for anyone (``email``)."""
        if email is not None and (actor.role == "admin" or email_key(email) != email_key(actor.email)):
            self.admin_set_password(actor, email=email, new_password=new_password)
        elif current_password is not None:
            self.change_own_password(actor, current_password=current_password, new_password=new_password)
        else:
            raise InvalidRequest(
                "give current_password to change your own password, or email (admins) to set another's",
                code="missing_field",
            )

    def change_own_password(self, user: User, *, current_password: str, new_password: str) -> None:
        if not self.hasher.verify(current_password, user.password_hash):
            raise InvalidRequest("current password is incorrect", code="wrong_password")
        self._set_password(user, new_password)

    def admin_set_password(self, actor: User, *, email: str, new_password: str) -> User:
        if actor.role != "admin":
            raise Forbidden("only an admin can set another user's password", code="admin_required")
        user = self._find_by_email(email)
        if user is None:
            raise NotFound("no account with this e-mail", code="user_not_found")
        self._set_password(user, new_password)
        return user

    def _set_password(self, user: User, new_password: str) -> None:
        validate_password(new_password)
        user.password_hash = self.hasher.hash(new_password)
        # Bumping the version invalidates every access token issued before now.
        user.token_version = User.token_version + 1
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=self.now)
        )
        self.session.execute(delete(LoginFailure).where(LoginFailure.email_key == email_key(user.email)))
        self.session.flush()
        self.session.refresh(user)

    def request_password_reset(self, email: str, *, reset_url: str) -> ResetMessage | None:
        """A new single-use reset token for a real account (None for unknown e-mails: the
        caller answers the same either way, so the endpoint reveals nothing)."""
        user = self._find_by_email(email)
        if user is None:
            return None
        token = opaque_token()
        # Only the newest link works; older unused ones are retired.
        self.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
            .values(used_at=self.now)
        )
        self.session.add(
            PasswordResetToken(
                token_hash=token_digest(token), user_id=user.id, expires_at=self.now + self.policy.reset_ttl
            )
        )
        self.session.flush()
        minutes = int(self.policy.reset_ttl.total_seconds() // 60)
        return ResetMessage(
            to=user.email,
            subject="Reset your Reservations password",
            body=(
                f"Hello {user.name},\n\n"
                f"Use this single-use token within {minutes} minutes to choose a new password:\n\n"
                f'{token}\n\nPOST it to {reset_url} as {{"token": "...", "new_password": "..."}}.\n'
                "If you did not ask for this, ignore this message.\n"
            ),
        )

    def confirm_password_reset(self, token: str, new_password: str) -> User:
        validate_password(new_password)
        stored = self.session.scalars(
            select(PasswordResetToken).where(PasswordResetToken.token_hash == token_digest(token)).with_for_update()
        ).first()
        if stored is None or stored.used_at is not None or stored.expires_at <= self.now:
            raise InvalidRequest("reset token is invalid, used or expired", code="invalid_reset_token")
        user = self.session.get(User, stored.user_id)
        if user is None:
            raise InvalidRequest("reset token is invalid, used or expired", code="invalid_reset_token")
        stored.used_at = self.now
        self._set_password(user, new_password)
        return user

    # --- lookups -------------------------------------------------------------------

    def _find_by_email(self, email: str) -> User | None:
        return self.session.scalars(select(User).where(func.lower(User.email) == email_key(email))).first()
