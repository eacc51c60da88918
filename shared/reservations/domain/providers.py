"""Providers' profiles, booking rules and visit types, and the directory patients search."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnClause, ColumnElement, Select, func, literal_column, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased

from reservations.adapters.db import User, VisitType, sqlstate
from reservations.domain.accounts import ERASED_PASSWORD_HASH, validate_timezone
from reservations.domain.errors import Conflict, Forbidden, NotFound, Unprocessable

RULE_FIELDS = ("min_notice_hours", "horizon_days", "cancellation_notice_hours", "max_appointments_per_day")
MAX_CURSOR = 2**63 - 1
# Exactly the expression of the users_provider_search index (migration 0003), spelled with
# constants rather than bound parameters so the planner always matches it to the index.
SEARCH_DOCUMENT: ColumnClause[Any] = literal_column(
    "to_tsvector('simple', coalesce(users.name, '') || ' ' || coalesce(users.specialty, ''))"
)
_WORD = re.compile(r"\w+")
# A word prefix matching at most this many providers is a sparse one: its matches are read
# from the full-text index and sorted; a denser one walks the primary key in order, which
# meets a page of matches soon (see ProviderDirectory.search).
SPARSE_MATCHES = 1000


@dataclass(frozen=True)
class DirectoryPage:
    providers: list[tuple[User, list[VisitType]]]
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or int(cursor) > MAX_CURSOR:
        raise Unprocessable("cursor is not one this API returned", code="invalid_cursor")
    return int(cursor)


def search_query(q: str) -> str | None:
    """A prefix query for every word of ``q`` (``dr de`` finds "Dr Ada Derm"); None when
    ``q`` holds no word at all."""
    words = _WORD.findall(q.lower())
    return " & ".join(f"'{word}':*" for word in words) if words else None


NUL = "\x00"


def _first_matches(conditions: Sequence[ColumnElement[bool]], count: int) -> Select[User]:
    """The first ``count`` providers in id order meeting ``conditions``, one of them a
    full-text match. Postgres cannot estimate a prefix query's selectivity (it assumes 2 %
    of the table), so it picks one plan for every prefix: walking the primary key in order
    and testing each row reads the whole table for a rare prefix ("zol": 10 of 100,000),
    while sorting every match from the index reads thousands of rows for a common one
    ("a"). One statement does both, each under a one-time filter: at most SPARSE_MATCHES
    matches (read from the index, stopping after one more) are sorted, more mean a dense
    prefix whose first page lies early on the primary key."""
    matches = select(User.id).where(*conditions).limit(SPARSE_MATCHES + 1).cte("matches").prefix_with("MATERIALIZED")
    found = select(func.count()).select_from(matches).scalar_subquery()
    sparse = select(matches.c.id).where(found <= SPARSE_MATCHES).order_by(matches.c.id).limit(count)
    dense = select(User.id).where(found > SPARSE_MATCHES, *conditions).order_by(User.id).limit(count)
    page = union_all(sparse, dense).subquery("page")
    # Another name for the rows read, so the subqueries' `users` (which the index
    # expression names) stays their own table rather than this one.
    listed = aliased(User, name="listed")
    return select(listed).where(listed.id.in_(select(page.c.id))).order_by(listed.id)


class ProviderDirectory:
    """Profiles, rules and visit types of providers; the searchable directory."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # --- profile and rules ---------------------------------------------------------

    def provider(self, provider_id: int, *, for_update: bool = False) -> User:
        query = select(User).where(User.id == provider_id, User.role == "provider")
        if for_update:
            query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
        found = self.session.scalars(query).first()
        if found is None:
            raise NotFound(f"provider {provider_id} not found", code="provider_not_found")
        return found

    def require_manager(self, actor: User, provider_id: int, *, for_update: bool = False) -> User:
        """The provider, if the actor is that provider or an admin."""
        provider = self.provider(provider_id, for_update=for_update)
        if actor.role != "admin" and actor.id != provider_id:
            raise Forbidden("only the provider or an admin can do this", code="not_your_schedule")
        return provider

    def update_profile(self, actor: User, provider_id: int, changes: Mapping[str, Any]) -> User:
        """Merge a PATCH: named fields replace stored ones, ``None`` clears a nullable field
        (the cap, specialty, bio) or restores a rule's default, absent fields stay."""
        provider = self.require_manager(actor, provider_id, for_update=True)
        for field in ("name", "specialty", "bio"):
            if field in changes:
                setattr(provider, field, changes[field])
        if "timezone" in changes and changes["timezone"] is not None:
            timezone = validate_timezone(changes["timezone"])
            if timezone != provider.timezone:
                provider.timezone = timezone
                provider.slots_version += 1  # every local day shifts: all cached days are stale
        rules = changes.get("rules")
        if rules is not None:
            for field in RULE_FIELDS:
                if field in rules:
                    setattr(provider, field, rules[field])
        self.session.flush()
        return provider

    # --- visit types -----------------------------------------------------------------

    def visit_types(self, provider_ids: Sequence[int]) -> dict[int, list[VisitType]]:
        """The active visit types of each provider, default first."""
        found: dict[int, list[VisitType]] = {provider_id: [] for provider_id in provider_ids}
        rows = self.session.scalars(
            select(VisitType)
            .where(VisitType.provider_id.in_(list(provider_ids)), VisitType.active)
            .order_by(VisitType.provider_id, VisitType.is_default.desc(), VisitType.id)
        )
        for visit_type in rows:
            found[visit_type.provider_id].append(visit_type)
        return found

    def add_visit_type(self, actor: User, provider_id: int, fields: Mapping[str, Any]) -> VisitType:
        self.require_manager(actor, provider_id)
        visit_type = VisitType(provider_id=provider_id, active=True, is_default=False, **fields)
        self.session.add(visit_type)
        self._flush_unique(visit_type.name)
        return visit_type

    def _owned_type(self, actor: User, visit_type_id: int) -> VisitType:
        visit_type = self.session.scalars(
            select(VisitType).where(VisitType.id == visit_type_id).with_for_update()
        ).first()
        if visit_type is None or not visit_type.active:
            raise NotFound(f"visit type {visit_type_id} not found", code="visit_type_not_found")
        if actor.role != "admin" and actor.id != visit_type.provider_id:
            raise Forbidden("only the provider or an admin can change its visit types", code="not_your_schedule")
        return visit_type

    def update_visit_type(self, actor: User, visit_type_id: int, changes: Mapping[str, Any]) -> VisitType:
        """Changes apply to bookings made from now on: appointments keep the range and
        buffers they were booked with."""
        visit_type = self._owned_type(actor, visit_type_id)
        shape = {"duration_minutes", "buffer_before_minutes", "buffer_after_minutes"}
        if visit_type.is_default and any(
            field in changes and changes[field] != getattr(visit_type, field) for field in shape
        ):
            raise Conflict(
                "the default visit type stays 15 minutes without buffers (clients that name no type rely on "
                "it); create another visit type instead",
                code="default_visit_type_fixed",
            )
        for field, value in changes.items():
            setattr(visit_type, field, value)
        self._flush_unique(visit_type.name)
        return visit_type

    def deactivate_visit_type(self, actor: User, visit_type_id: int) -> VisitType:
        visit_type = self._owned_type(actor, visit_type_id)
        if visit_type.is_default:
            raise Conflict("the default visit type cannot be deleted", code="default_visit_type")
        visit_type.active = False
        self.session.flush()
        return visit_type

    def _flush_unique(self, name: str) -> None:
        try:
            self.session.flush()
        except DBAPIError as error:  # the partial unique index on active names
            if sqlstate(error) == "23505":
                raise Conflict(
                    f"an active visit type named '{name}' exists already", code="visit_type_exists"
                ) from None
            raise

    # --- directory -------------------------------------------------------------------

    def search(self, *, q: str | None, specialty: str | None, limit: int, cursor: str | None) -> DirectoryPage:
        """Providers in id order (a keyset cursor: providers added meanwhile come later,
        none twice, none skipped); ``q`` matches the beginning of any word of the name or
        the specialty, ``specialty`` the whole specialty, both case-insensitively."""
        after = parse_cursor(cursor)
        # Erased providers keep their rows for past appointments, but are not listed.
        conditions: list[ColumnElement[bool]] = [
            User.role == "provider",
            User.id > after,
            User.password_hash != ERASED_PASSWORD_HASH,
        ]
        if specialty is not None:
            if NUL in specialty:  # no stored text holds one (Postgres refuses it): nothing matches
                return DirectoryPage([], None)
            conditions.append(func.lower(User.specialty) == specialty.lower())
        if q is None:
            statement = select(User).where(*conditions).order_by(User.id).limit(limit + 1)
        else:
            query_text = search_query(q)
            if query_text is None:
                return DirectoryPage([], None)
            conditions.append(SEARCH_DOCUMENT.bool_op("@@")(func.to_tsquery("simple", query_text)))
            statement = _first_matches(conditions, limit + 1)
        rows = list(self.session.scalars(statement))
        page, more = rows[:limit], len(rows) > limit
        types = self.visit_types([provider.id for provider in page])
        return DirectoryPage([(provider, types[provider.id]) for provider in page], str(page[-1].id) if more else None)

    def with_specialty(self, specialty: str, limit: int) -> list[User]:
        if NUL in specialty:
            return []
        return list(
            self.session.scalars(
                select(User)
                .where(User.role == "provider", func.lower(User.specialty) == specialty.lower())
                .order_by(User.id)
                .limit(limit)
            )
        )

    def with_ids(self, provider_ids: Sequence[int]) -> list[User]:
        """The providers among these ids (others are skipped, not errors)."""
        return list(
            self.session.scalars(
                select(User).where(User.role == "provider", User.id.in_(list(provider_ids))).order_by(User.id)
            )
        )
