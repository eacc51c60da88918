"""Privacy use cases: a user's data export (theirs, or anyone's for an admin) and account
erasure (one's own after re-entering the password, or anyone's by an admin)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import LoginFailure, User
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user, email_key
from reservations.domain.audit import current_request, record_audit
from reservations.domain.booking import BookingService
from reservations.domain.errors import Forbidden, NotFound, TooManyRequests
from reservations.domain.privacy import check_erasable, erase, export_document
from reservations.usecases import Resources


class PrivacyUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    # --- export --------------------------------------------------------------------------

    def export_own(self, caller: AccessClaims) -> dict[str, Any]:
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            return self._export(session, user, user)

    def export_user(self, caller: AccessClaims, user_id: int) -> dict[str, Any]:
        """Admins only; anyone else is told the user does not exist."""
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            target = session.get(User, user_id) if actor.role == "admin" else None
            if target is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            return self._export(session, actor, target)

    def _export(self, session: Session, actor: User, target: User) -> dict[str, Any]:
        now = self._resources.now()
        document = export_document(session, target, now)
        self._audit(session, actor, "user.export", target)
        return document

    # --- erasure -------------------------------------------------------------------------

    def erase_own(self, caller: AccessClaims, *, password: str, source_ip: str | None = None) -> None:
        with self._resources.unit_of_work() as session:
            user = self._locked(session, current_user(session, caller).id)
            self._reauthenticate(session, user, password, source_ip)
            self._erase(session, user, user)
        self._resources.publish_after_commit()

    def erase_user(self, caller: AccessClaims, user_id: int) -> None:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            if actor.role != "admin":
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            self._erase(session, actor, self._locked(session, user_id))
        self._resources.publish_after_commit()

    def _erase(self, session: Session, actor: User, user: User) -> None:
        now = self._resources.now()
        # Erasures (and admin changes) run one at a time, so two admins cannot both leave.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('erasure'))"))
        check_erasable(session, user, now)
        booking = BookingService(
            session, policy=self._resources.booking_policy, now=now, request_id=current_request().request_id
        )
        cancelled = erase(session, booking, user)
        self._audit(
            session,
            actor,
            "user.erased",
            user,
            details={"by": "self" if actor is user else "admin", "cancelled_appointments": cancelled},
        )
        self._resources.count("AccountsErased")

    @staticmethod
    def _locked(session: Session, user_id: int) -> User:
        user = session.scalars(
            select(User).where(User.id == user_id).with_for_update().execution_options(populate_existing=True)
        ).first()
        if user is None:
            raise NotFound(f"user {user_id} not found", code="user_not_found")
        return user

    def _reauthenticate(self, session: Session, user: User, password: str, source_ip: str | None) -> None:
        """The password, counted like a sign-in: a stolen access token neither erases the
        account nor lets anyone guess the password faster than at the sign-in."""
        policy = self._resources.account_policy
        key = email_key(user.email)
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "login:" + key})
        now = self._resources.now()
        recent = session.scalar(
            select(func.count()).where(
                LoginFailure.email_key == key,
                LoginFailure.failed_at > now - policy.login_lockout,
                LoginFailure.source_ip.is_not_distinct_from(source_ip),
            )
        )
        if (recent or 0) >= policy.login_max_failures:
            raise TooManyRequests(
                "too many failed attempts for this account from this address; try again later",
                retry_after_seconds=int(policy.login_lockout.total_seconds()),
                code="login_locked",
            )
        if not self._resources.hasher.verify(password, user.password_hash):
            session.add(LoginFailure(email_key=key, failed_at=now, source_ip=source_ip))
            raise Forbidden("the password is incorrect", code="wrong_password", keep_changes=True)

    def _audit(
        self, session: Session, actor: User, action: str, target: User, *, details: dict[str, Any] | None = None
    ) -> None:
        record_audit(
            session,
            at=self._resources.now(),
            actor_id=actor.id,
            actor_role=actor.role,
            action=action,
            target_type="user",
            target_id=target.id,
            subject_id=None if target is actor else target.id,
            details=details,
        )
