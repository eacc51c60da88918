"""Reading the audit trail: admins search all of it, everyone sees their own activity
(entries where they are the actor or the subject), newest first, with a keyset cursor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user
from reservations.domain.errors import Forbidden, Unprocessable
from reservations.usecases import Resources

MAX_PAGE = 200
_COLUMNS = "id, at, actor_id, actor_role, action, target_type, target_id, request_id, source_ip, details"


@dataclass(frozen=True)
class AuditFilter:
    actor_id: int | None = None
    target_type: str | None = None
    target_id: int | None = None
    action: str | None = None
    first: datetime | None = None
    last: datetime | None = None


@dataclass(frozen=True)
class AuditPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise Unprocessable("cursor must be the next_cursor of the previous page", code="invalid_cursor")
    return int(value)


class AuditUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def search(self, caller: AccessClaims, where: AuditFilter, *, limit: int, cursor: str | None) -> AuditPage:
        with self._resources.unit_of_work() as session:
            if current_user(session, caller).role != "admin":
                raise Forbidden("the audit log is for admins", code="admin_required")
            conditions: list[str] = []
            values: dict[str, Any] = {}
            for column, value in (
                ("actor_id", where.actor_id),
                ("target_type", where.target_type),
                ("target_id", where.target_id),
                ("action", where.action),
            ):
                if value is not None:
                    conditions.append(f"{column} = :{column}")
                    values[column] = value
            if where.first is not None:
                conditions.append("at >= :first")
                values["first"] = where.first
            if where.last is not None:
                conditions.append("at < :last")
                values["last"] = where.last
            return self._page(session, conditions, values, limit=limit, cursor=cursor)

    def activity(self, caller: AccessClaims, *, limit: int, cursor: str | None) -> AuditPage:
        with self._resources.unit_of_work() as session:
            me = current_user(session, caller)
            return self._page(
                session, ["(actor_id = :me OR subject_id = :me)"], {"me": me.id}, limit=limit, cursor=cursor
            )

    @staticmethod
    def _page(
        session: Any, conditions: list[str], values: dict[str, Any], *, limit: int, cursor: str | None
    ) -> AuditPage:
        before = _cursor(cursor)
        if before is not None:
            conditions = [*conditions, "id < :before"]
            values = {**values, "before": before}
        where = " AND ".join(conditions) if conditions else "true"
        rows = (
            session.execute(
                text(f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY id DESC LIMIT :limit"),
                {**values, "limit": min(limit, MAX_PAGE) + 1},
            )
            .mappings()
            .all()
        )
        page = [dict(row) for row in rows[:limit]]
        return AuditPage(page, str(page[-1]["id"]) if len(rows) > limit else None)
