"""Password hashing (argon2id via passlib/libpass) and JWT access tokens (PyJWT)."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import jwt

from reservations.domain.errors import Unauthenticated

JWT_ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105
CLOCK_SKEW_SECONDS = 60


class PasswordHasher:
    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536) -> None:
        # Imported here: only a function that hashes or verifies passwords builds a hasher.
        from passlib.context import CryptContext

        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__rounds=time_cost,
            argon2__memory_cost=memory_kib,
            argon2__parallelism=1,
        )
        # Verifying against this when the account does not exist keeps the response time
        # of "unknown e-mail" equal to that of "wrong password".
        self._dummy_hash = self._context.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return str(self._context.hash(password))

    def verify(self, password: str, password_hash: str | None) -> bool:
        if password_hash is None:
            self._context.verify(password, self._dummy_hash)
            return False
        try:
            return bool(self._context.verify(password, password_hash))
        except (ValueError, TypeError):
            return False


def opaque_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Refresh and reset tokens are stored as digests so a database leak reveals none."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SigningKeys:
    """The active key signs; every listed key verifies, so keys can rotate by `kid`."""

    active_kid: str
    keys: Mapping[str, str]

    @classmethod
    def from_secret(cls, secret: str, *, min_bytes: int = 0) -> SigningKeys:
        """A plain string is one key; JSON `{"keys": [{"kid", "secret"}, ...]}` lists
        several with the first active (the shape to use in Secrets Manager to rotate).
        Every key must have at least ``min_bytes`` bytes (HS256 wants 32: RFC 7518 3.2)."""
        stripped = secret.strip()
        if stripped.startswith("{"):
            document = json.loads(stripped)
            entries = document.get("keys") or []
            if not entries:
                raise ValueError("JWT secret JSON must contain a non-empty 'keys' list")
            keys = {str(entry["kid"]): str(entry["secret"]) for entry in entries}
            found = cls(active_kid=str(entries[0]["kid"]), keys=keys)
        else:
            kid = hashlib.sha256(stripped.encode()).hexdigest()[:12]
            found = cls(active_kid=kid, keys={kid: stripped})
        short = sorted(kid for kid, key in found.keys.items() if len(key.encode()) < min_bytes)
        if short:
            # Names the keys, never their values.
            raise ValueError(f"JWT signing keys must have at least {min_bytes} bytes; too short: {', '.join(short)}")
        return found


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str
    token_version: int
    expires_at: datetime


# Access tokens whose signature, issuer and audience were verified, remembered by their
# exact text with the key, issuer and audience that verified them: a warm container sees
# the same few tokens again and again, and PyJWT's verification was a tenth of a cached
# listing. The time claims are still checked on every use against the request's clock,
# revocation in the database, and the key is still looked up by the token's kid in the
# codec's current keys (a rotated-out key verifies nothing); a failed token is never
# remembered.
VERIFIED_TOKENS = 1024


class TokenCodec:
    def __init__(self, keys: SigningKeys, *, issuer: str, audience: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience

    def issue_access(self, *, user_id: int, role: str, token_version: int, now: datetime, ttl: timedelta) -> str:
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "role": role,
            "tv": token_version,
            "typ": ACCESS_TOKEN_TYPE,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        kid = self._keys.active_kid
        return jwt.encode(claims, self._keys.keys[kid], algorithm=JWT_ALGORITHM, headers={"kid": kid})

    def decode_access(self, token: str, *, now: datetime) -> AccessClaims:
        key = self._keys.keys.get(_key_id(token))
        if key is None:
            raise Unauthenticated("token signed with an unknown key", code="invalid_token")
        claims = _verified(token, key, self._issuer, self._audience)
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise Unauthenticated("invalid token", code="invalid_token")
        try:
            expires, issued = int(claims["exp"]), int(claims["iat"])
        except (TypeError, ValueError):
            raise Unauthenticated("invalid token", code="invalid_token") from None
        if expires <= int(now.timestamp()):
            raise Unauthenticated("token has expired", code="token_expired")
        if issued > int(now.timestamp()) + CLOCK_SKEW_SECONDS:
            raise Unauthenticated("token issued in the future", code="invalid_token")
        try:
            return AccessClaims(
                user_id=int(claims["sub"]),
                role=str(claims["role"]),
                token_version=int(claims["tv"]),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo),
            )
        except (KeyError, TypeError, ValueError):
            raise Unauthenticated("invalid token", code="invalid_token") from None


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _key_id(token: str) -> str:
    """The kid in a token's header, unverified: remembered like `_verified`, since PyJWT
    decodes every segment to read it."""
    try:
        return str(jwt.get_unverified_header(token).get("kid"))
    except jwt.PyJWTError:
        raise Unauthenticated("invalid token", code="invalid_token") from None


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(token: str, key: str, issuer: str, audience: str) -> Mapping[str, Any]:
    """The claims of a token signed with ``key`` for this issuer and audience, with every
    required claim present (not yet checked against any clock)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            audience=audience,
            issuer=issuer,
            # Time claims are checked by decode_access against the injected clock, not the wall clock.
            options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise Unauthenticated("invalid token", code="invalid_token") from None
    return MappingProxyType(claims)
