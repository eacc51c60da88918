"""Accounts and authentication: registration, login with lockout, rotating refresh
tokens, password change and the e-mailed reset flow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from reservations.adapters.db import (
    EmailVerificationToken,
    LoginFailure,
    PasswordResetRequest,
    PasswordResetToken,
    RefreshToken,
    User,
    sqlstate,
)
from reservations.adapters.mail import compose
from reservations.adapters.security import AccessClaims, PasswordHasher, TokenCodec, opaque_token, token_digest
from reservations.domain.audit import record_audit
from reservations.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unprocessable,
)
from reservations.domain.events import enqueue_mail

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
SELF_SERVICE_ROLES = ("patient", "provider")
INVALID_CREDENTIALS = "incorrect e-mail or password"
# An erased account's password hash (privacy.py): not a hash of any scheme the hasher
# knows, so verification of any password fails; also how an erased user is recognised.
ERASED_PASSWORD_HASH = "!"  # noqa: S105 - a marker, not a password


@dataclass(frozen=True)
class AccountPolicy:
    access_ttl: timedelta
    refresh_ttl: timedelta
    login_max_failures: int
    login_lockout: timedelta
    reset_ttl: timedelta
    # The ceiling per account whatever the address; login_max_failures is per (account, address).
    login_account_max_failures: int = 50
    reset_cooldown: timedelta = timedelta(minutes=5)
    verification_ttl: timedelta = timedelta(hours=24)
    mail_sender: str = "reservations@localhost"
    reset_url: str = ""


@dataclass(frozen=True)
class ResetMessage:
    """A reset token to send to its owner (only ever to them, never to a log or event)."""

    user_id: int
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
        user = self._create_user(name=name, email=email, password=password, role=role, timezone=timezone)
        self._audit(
            actor or user,
            "admin.created" if role == "admin" else "user.registered",
            user,
            details={"role": role},
        )
        return user

    def create_first_admin(self, *, name: str, email: str, password: str) -> User:
        """Operator bootstrap (the CLI and the migrate function): needs no admin token, and
        is refused once any admin exists; concurrent bootstraps are serialised, so two at
        once cannot both find "no admin yet"."""
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('reservations:create-first-admin'))"))
        if self.session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None:
            raise Conflict(
                "an admin exists already; admins create further admins with POST /register", code="admin_exists"
            )
        admin = self._create_user(name=name, email=email, password=password, role="admin", timezone="UTC")
        self._audit(None, "admin.created", admin, details={"role": "admin", "bootstrap": True})
        return admin

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

    def login(self, email: str, password: str, *, source_ip: str | None = None) -> TokenPair:
        key = email_key(email)
        # Serialise attempts on one account so parallel guesses cannot exceed the limit.
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "login:" + key})
        self._refuse_if_locked_out(key, source_ip)
        user = self._find_by_email(email)
        if not self.hasher.verify(password, user.password_hash if user else None) or user is None:
            # The failure must count even though the request fails.
            self.session.add(LoginFailure(email_key=key, failed_at=self.now, source_ip=source_ip))
            # The target is the account if there is one; an unknown e-mail is not recorded.
            self._audit(None, "login.failed", user, details={"known_account": user is not None})
            raise Unauthenticated(INVALID_CREDENTIALS, code="invalid_credentials", keep_changes=True)
        self._forget_failures(key, source_ip)
        self._audit(user, "login.succeeded", user)
        return self._issue_pair(user, family_id=str(uuid.uuid4()))

    def _forget_failures(self, key: str, source_ip: str | None) -> None:
        """A success clears its own address's failures; an attacker's elsewhere stay counted."""
        self.session.execute(
            delete(LoginFailure).where(
                LoginFailure.email_key == key, LoginFailure.source_ip.is_not_distinct_from(source_ip)
            )
        )

    def _refuse_if_locked_out(self, key: str, source_ip: str | None) -> None:
        """429 after LOGIN_MAX_FAILURES within the window from this address, or after the
        looser per-account ceiling from anywhere: guessing from one address locks only that
        address, so nobody can keep the owner out by failing on purpose."""
        window_start = self.now - self.policy.login_lockout
        recent_here = and_(
            LoginFailure.email_key == key,
            LoginFailure.failed_at > window_start,
            LoginFailure.source_ip.is_not_distinct_from(source_ip),
        )
        for condition, ceiling, what in (
            (recent_here, self.policy.login_max_failures, "this account from this address"),
            (
                and_(LoginFailure.email_key == key, LoginFailure.failed_at > window_start),
                self.policy.login_account_max_failures,
                "this account",
            ),
        ):
            recent = self.session.scalars(
                select(LoginFailure.failed_at).where(condition).order_by(LoginFailure.failed_at.desc()).limit(ceiling)
            ).all()
            if len(recent) >= ceiling:
                unlock_at = recent[-1] + self.policy.login_lockout
                retry_after = int((unlock_at - self.now).total_seconds()) + 1
                raise TooManyRequests(
                    f"too many failed attempts for {what}; try again later",
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
            owner = self.session.get(User, stored.user_id)
            self._audit(None, "refresh_token.reused", owner, details={"family_revoked": True})
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
        self,
        actor: User,
        *,
        email: str | None,
        current_password: str | None,
        new_password: str,
        source_ip: str | None = None,
    ) -> None:
        """A user's own change (``current_password``), or an admin's for another user
        (``email``). An admin re-authenticates to change its own password or another admin's."""
        if email is not None and email_key(email) != email_key(actor.email):
            self.admin_set_password(
                actor, email=email, new_password=new_password, current_password=current_password, source_ip=source_ip
            )
        elif current_password is not None:
            self.change_own_password(
                actor, current_password=current_password, new_password=new_password, source_ip=source_ip
            )
        else:
            raise InvalidRequest(
                "give current_password to change your own password, or email (admins) to set another's",
                code="missing_field",
            )

    def _reauthenticate(self, user: User, password: str | None, source_ip: str | None) -> None:
        """The current password, counted like a sign-in: a stolen access token does not
        allow guessing it (each guess also costs an argon2 hash)."""
        key = email_key(user.email)
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "login:" + key})
        self._refuse_if_locked_out(key, source_ip)
        if password is None or not self.hasher.verify(password, user.password_hash):
            self.session.add(LoginFailure(email_key=key, failed_at=self.now, source_ip=source_ip))
            raise InvalidRequest("current password is incorrect", code="wrong_password", keep_changes=True)

    def change_own_password(
        self, user: User, *, current_password: str, new_password: str, source_ip: str | None = None
    ) -> None:
        self._reauthenticate(user, current_password, source_ip)
        self._set_password(user, new_password)
        self._audit(user, "password.changed", user)

    def admin_set_password(
        self,
        actor: User,
        *,
        email: str,
        new_password: str,
        current_password: str | None = None,
        source_ip: str | None = None,
    ) -> User:
        if actor.role != "admin":
            raise Forbidden("only an admin can set another user's password", code="admin_required")
        user = self._find_by_email(email)
        if user is None:
            raise NotFound("no account with this e-mail", code="user_not_found")
        if user.role == "admin":
            if current_password is None:
                raise InvalidRequest(
                    "setting another admin's password needs your current_password", code="missing_field"
                )
            self._reauthenticate(actor, current_password, source_ip)
        self._set_password(user, new_password)
        self._audit(actor, "password.set_by_admin", user)
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
        # Open reset links die with the old password.
        self.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
            .values(used_at=self.now)
        )
        self.session.execute(delete(LoginFailure).where(LoginFailure.email_key == email_key(user.email)))
        self.session.flush()
        self.session.refresh(user)
        # Security mail: sent whatever notify_email says.
        message = compose(
            sender=self.policy.mail_sender,
            to=user.email,
            subject="Your Reservations password was changed",
            body=(
                f"Hello {user.name},\n\nThe password of your account was changed at "
                f"{self.now:%Y-%m-%d %H:%M} UTC, and every session was signed out.\n"
                "If this was not you, reset your password at once and tell your clinic.\n"
            ),
        )
        enqueue_mail(
            self.session,
            key=f"password-changed:{user.id}:{uuid.uuid4()}",
            user_id=user.id,
            message=message,
            now=self.now,
        )

    # --- sessions ------------------------------------------------------------------

    def logout(self, refresh_token: str) -> None:
        """Revoke the refresh token's whole family (this sign-in on every device it was
        refreshed on); unknown tokens are answered the same, revealing nothing."""
        stored = self.session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == token_digest(refresh_token))
        ).first()
        if stored is not None:
            self.session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == stored.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=self.now)
            )
            user = self.session.get(User, stored.user_id)
            self._audit(user, "logout", user)

    def logout_everywhere(self, user: User) -> None:
        """Every access and refresh token of the user stops working at once."""
        user.token_version = User.token_version + 1
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=self.now)
        )
        self.session.flush()
        self._audit(user, "logout.everywhere", user)

    # --- e-mail verification -------------------------------------------------------

    def request_email_verification(self, user: User) -> None:
        if user.email_verified:
            return
        token = opaque_token()
        self.session.execute(
            update(EmailVerificationToken)
            .where(EmailVerificationToken.user_id == user.id, EmailVerificationToken.used_at.is_(None))
            .values(used_at=self.now)
        )
        self.session.add(
            EmailVerificationToken(
                token_hash=token_digest(token), user_id=user.id, expires_at=self.now + self.policy.verification_ttl
            )
        )
        hours = int(self.policy.verification_ttl.total_seconds() // 3600)
        message = compose(
            sender=self.policy.mail_sender,
            to=user.email,
            subject="Confirm your e-mail address for Reservations",
            body=(
                f"Hello {user.name},\n\nUse this single-use token within {hours} hours to confirm your address:\n\n"
                f'{token}\n\nPOST it to /email-verification/confirm as {{"token": "..."}}.\n'
            ),
        )
        enqueue_mail(self.session, key=f"verify:{token_digest(token)}", user_id=user.id, message=message, now=self.now)

    def confirm_email_verification(self, token: str) -> User:
        stored = self.session.scalars(
            select(EmailVerificationToken)
            .where(EmailVerificationToken.token_hash == token_digest(token))
            .with_for_update()
        ).first()
        if stored is None or stored.used_at is not None or stored.expires_at <= self.now:
            raise InvalidRequest("verification token is invalid, used or expired", code="invalid_verification_token")
        stored.used_at = self.now
        user = self.session.get_one(User, stored.user_id)
        user.email_verified = True
        return user

    def record_reset_request(self, email: str) -> None:
        """The request path: the same single INSERT for every address, known or not, so
        neither the answer nor the work done reveals whether an account exists."""
        self.session.add(PasswordResetRequest(email=email[:320], requested_at=self.now))

    def process_reset_requests(self, *, batch: int = 100) -> int:
        """Off the request path: each recorded request becomes, for a real account outside
        its cooldown, a new single-use token and a queued message to its owner."""
        pending = self.session.scalars(
            select(PasswordResetRequest)
            .where(PasswordResetRequest.processed_at.is_(None))
            .order_by(PasswordResetRequest.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        for request in pending:
            request.processed_at = self.now
            message = self.request_password_reset(request.email, reset_url=self.policy.reset_url)
            if message is not None:
                enqueue_mail(
                    self.session,
                    key=f"reset:{request.id}",
                    user_id=message.user_id,
                    message=compose(
                        sender=self.policy.mail_sender, to=message.to, subject=message.subject, body=message.body
                    ),
                    now=self.now,
                )
        return len(pending)

    def request_password_reset(self, email: str, *, reset_url: str) -> ResetMessage | None:
        """A new single-use reset token for a real account outside its cooldown (None for
        unknown e-mails and within the cooldown: one mail per RESET cooldown per address)."""
        user = self._find_by_email(email)
        if user is None:
            return None
        cooling_since = self.now - self.policy.reset_cooldown
        recent = self.session.scalar(
            select(func.count())
            .select_from(PasswordResetToken)
            .where(
                PasswordResetToken.user_id == user.id,
                PasswordResetToken.expires_at - self.policy.reset_ttl > cooling_since,
            )
        )
        if recent:
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
            user_id=user.id,
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
        self._audit(user, "password.reset", user)
        return user

    # --- the audit trail ------------------------------------------------------------

    def _audit(
        self, actor: User | None, action: str, target: User | None, *, details: dict[str, object] | None = None
    ) -> None:
        record_audit(
            self.session,
            at=self.now,
            actor_id=actor.id if actor is not None else None,
            actor_role=actor.role if actor is not None else "anonymous",
            action=action,
            target_type="user",
            target_id=target.id if target is not None else None,
            subject_id=target.id if target is not None and target is not actor else None,
            details=details,
        )

    # --- lookups -------------------------------------------------------------------

    def _find_by_email(self, email: str) -> User | None:
        return self.session.scalars(select(User).where(func.lower(User.email) == email_key(email))).first()
