"""Typed domain errors. Each carries a machine `code` and a client-facing message; the
HTTP layer maps the classes to status codes once (never by matching message text)."""

from __future__ import annotations


class DomainError(Exception):
    """``keep_changes``: the writes made before the error are part of its outcome (a failed
    login is counted, a leaked refresh family revoked), so the unit of work commits them
    before the error reaches the caller; otherwise it rolls back."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, keep_changes: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.keep_changes = keep_changes
        if code:
            self.code = code


class InvalidRequest(DomainError):
    code = "invalid_request"


class Unauthenticated(DomainError):
    code = "not_authenticated"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Unprocessable(DomainError):
    """A well-formed request whose content is rejected (HTTP 422, our error body)."""

    code = "unprocessable"


class TooManyRequests(DomainError):
    code = "too_many_requests"

    def __init__(
        self, message: str, *, retry_after_seconds: int, code: str | None = None, keep_changes: bool = False
    ) -> None:
        super().__init__(message, code=code, keep_changes=keep_changes)
        self.retry_after_seconds = max(1, retry_after_seconds)


class ServiceUnavailable(DomainError):
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_seconds: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds
