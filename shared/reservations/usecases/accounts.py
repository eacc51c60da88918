"""Account use cases: registration, sign-in, tokens, passwords, the first admin."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from reservations.adapters.db import User
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import AccountService, TokenPair, current_user, validate_timezone
from reservations.domain.audit import record_audit
from reservations.usecases import Resources

logger = logging.getLogger(__name__)


class AccountUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def _service(self, session: Session, now: datetime, *, signs_tokens: bool = True) -> AccountService:
        r = self._resources
        codec = r.token_codec() if signs_tokens else None
        return AccountService(session, hasher=r.hasher, codec=codec, policy=r.account_policy, now=now)

    def verify(self, access_token: str) -> AccessClaims:
        """Signature, expiry, issuer and audience of a bearer token; no database. Whether
        it was revoked since is checked by each use case, inside its unit of work."""
        return self._resources.token_codec().decode_access(access_token, now=self._resources.now())

    def me(self, caller: AccessClaims) -> User:
        with self._resources.unit_of_work() as session:
            return current_user(session, caller)

    def update_me(self, caller: AccessClaims, changes: Mapping[str, Any]) -> User:
        """Name, time zone (mail shows times in it) and whether to receive notifications."""
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            if "name" in changes:
                user.name = str(changes["name"])
            if "timezone" in changes and changes["timezone"] != user.timezone:
                user.timezone = validate_timezone(str(changes["timezone"]))
                if user.role == "provider":
                    user.slots_version += 1  # every local day shifts: all cached days are stale
            if "notify_email" in changes:
                user.notify_email = bool(changes["notify_email"])
            record_audit(
                session,
                at=self._resources.now(),
                actor_id=user.id,
                actor_role=user.role,
                action="user.profile_changed",
                target_type="user",
                target_id=user.id,
                details={"fields": sorted(changes)},
            )
            return user

    def register(
        self, caller: AccessClaims | None, *, name: str, email: str, password: str, role: str, timezone: str
    ) -> User:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller) if caller is not None else None
            return self._service(session, self._resources.now(), signs_tokens=False).register(
                name=name, email=email, password=password, role=role, timezone=timezone, actor=actor
            )

    def login(self, email: str, password: str, *, source_ip: str | None = None) -> TokenPair:
        with self._resources.unit_of_work() as session:
            return self._service(session, self._resources.now()).login(email, password, source_ip=source_ip)

    def refresh(self, refresh_token: str) -> TokenPair:
        with self._resources.unit_of_work() as session:
            return self._service(session, self._resources.now()).refresh(refresh_token)

    def reset_password(
        self,
        caller: AccessClaims,
        *,
        email: str | None,
        current_password: str | None,
        new_password: str,
        source_ip: str | None = None,
    ) -> None:
        with self._resources.unit_of_work() as session:
            actor = current_user(session, caller)
            self._service(session, self._resources.now(), signs_tokens=False).reset_password(
                actor, email=email, current_password=current_password, new_password=new_password, source_ip=source_ip
            )
        self._resources.publish_after_commit()

    def request_password_reset(self, email: str) -> None:
        """Recorded only; the token and its mail are made off the request path."""
        with self._resources.unit_of_work() as session:
            self._service(session, self._resources.now(), signs_tokens=False).record_reset_request(email)

    def process_reset_requests(self) -> int:
        total = 0
        while True:
            with self._resources.unit_of_work() as session:
                done = self._service(session, self._resources.now(), signs_tokens=False).process_reset_requests()
            total += done
            if done == 0:
                return total

    def confirm_password_reset(self, token: str, new_password: str) -> None:
        with self._resources.unit_of_work() as session:
            self._service(session, self._resources.now(), signs_tokens=False).confirm_password_reset(
                token, new_password
            )

    def logout(self, refresh_token: str) -> None:
        with self._resources.unit_of_work() as session:
            self._service(session, self._resources.now(), signs_tokens=False).logout(refresh_token)

    def logout_everywhere(self, caller: AccessClaims) -> None:
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            self._service(session, self._resources.now(), signs_tokens=False).logout_everywhere(user)

    def request_email_verification(self, caller: AccessClaims) -> None:
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            self._service(session, self._resources.now(), signs_tokens=False).request_email_verification(user)

    def confirm_email_verification(self, token: str) -> User:
        with self._resources.unit_of_work() as session:
            return self._service(session, self._resources.now(), signs_tokens=False).confirm_email_verification(token)

    def create_first_admin(self, *, name: str, email: str, password: str) -> User:
        """The one bootstrap rule for the CLI and the migrate function: refused (409
        ``admin_exists``) once an admin exists, serialised against concurrent runs."""
        with self._resources.unit_of_work() as session:
            return self._service(session, self._resources.now(), signs_tokens=False).create_first_admin(
                name=name, email=email, password=password
            )
