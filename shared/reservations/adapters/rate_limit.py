"""Per-client rate limits in Redis with the `limits` library (moving window).

Keys are a scope (the route group), the kind of key (address or account) and a SHA-256 of
the key, so Redis never holds an e-mail address. With Redis unreachable the limiter fails
open (Postgres' lockout still holds) and says so once per circuit period.

`limits` is imported on first use: the auth function loads it with its first limited
request, not at start-up (its other routes, /me or /token/refresh, never need it)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from limits import RateLimitItem

logger = logging.getLogger(__name__)

CIRCUIT_SECONDS = 30.0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def tighter(self, other: Verdict) -> Verdict:
        """The verdict a client should be told about: a refusal, else the fewer left."""
        if self.allowed != other.allowed:
            return other if not other.allowed else self
        return self if self.remaining <= other.remaining else other


def parse_rule(rule: str) -> RateLimitItem:
    """`60/minute`, `5 per 10 seconds`: the library's notation (ValueError otherwise)."""
    from limits import parse

    return parse(rule)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(
        self,
        redis_url: str,
        *,
        on_open: Callable[[BaseException], None] | None = None,
        prefix: str = "ratelimit",
        credential_provider: Any = None,
    ) -> None:
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        # Short timeouts and no retries, as for the slot cache: a dead Redis must not stall sign-ins.
        self._storage = RedisStorage(
            redis_url,
            key_prefix=prefix,
            wrap_exceptions=True,
            socket_connect_timeout=0.1,
            socket_timeout=0.2,
            retry_on_timeout=False,
            **({"credential_provider": credential_provider} if credential_provider is not None else {}),
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._on_open = on_open
        self._open_until = 0.0

    def hit(self, rule: str, scope: str, kind: str, key: str) -> Verdict:
        item = parse_rule(rule)
        limit = item.amount
        if time.monotonic() < self._open_until:
            return Verdict(True, limit, limit, 0)
        identifiers = (scope, kind, _digest(key))
        try:
            allowed = self._limiter.hit(item, *identifiers)
            stats = self._limiter.get_window_stats(item, *identifiers)
        except Exception as error:  # the library wraps every storage failure
            self._open_until = time.monotonic() + CIRCUIT_SECONDS
            if self._on_open is not None:
                self._on_open(error)
            return Verdict(True, limit, limit, 0)
        reset = max(0, int(stats.reset_time - time.time()) + 1)
        return Verdict(allowed, limit, max(0, stats.remaining), reset)


class NoLimiter:
    """REDIS_URL empty: nothing to count in; the Postgres lockout still applies."""

    def hit(self, rule: str, scope: str, kind: str, key: str) -> Verdict:
        limit = parse_rule(rule).amount
        return Verdict(True, limit, limit, 0)
