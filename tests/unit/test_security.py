"""Password hashing and token codec: pure, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reservations.adapters.security import PasswordHasher, SigningKeys, TokenCodec, token_digest
from reservations.domain.errors import Unauthenticated

NOW = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)


def test_argon2id_hash_and_verify() -> None:
    hasher = PasswordHasher(time_cost=1, memory_kib=1024)
    digest = hasher.hash("correct horse")
    assert digest.startswith("$argon2id$")
    assert hasher.verify("correct horse", digest)
    assert not hasher.verify("wrong horse", digest)
    assert not hasher.verify("anything", None)
    assert not hasher.verify("anything", "not-a-hash")


def test_signing_keys_from_plain_and_json() -> None:
    plain = SigningKeys.from_secret("a-plain-secret")
    assert list(plain.keys.values()) == ["a-plain-secret"]
    rotated = SigningKeys.from_secret('{"keys": [{"kid": "new", "secret": "n"}, {"kid": "old", "secret": "o"}]}')
    assert rotated.active_kid == "new"
    assert set(rotated.keys) == {"new", "old"}
    with pytest.raises(ValueError, match="keys"):
        SigningKeys.from_secret('{"keys": []}')


def test_token_roundtrip_and_expiry() -> None:
    codec = TokenCodec(SigningKeys.from_secret("s" * 40), issuer="i", audience="a")
    token = codec.issue_access(user_id=7, role="provider", token_version=3, now=NOW, ttl=timedelta(minutes=30))
    claims = codec.decode_access(token, now=NOW + timedelta(minutes=29))
    assert (claims.user_id, claims.role, claims.token_version) == (7, "provider", 3)
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode_access(token, now=NOW + timedelta(minutes=30))


def test_token_from_another_audience_is_rejected() -> None:
    keys = SigningKeys.from_secret("s" * 40)
    token = TokenCodec(keys, issuer="i", audience="other").issue_access(
        user_id=1, role="patient", token_version=0, now=datetime.now(UTC), ttl=timedelta(minutes=5)
    )
    with pytest.raises(Unauthenticated):
        TokenCodec(keys, issuer="i", audience="a").decode_access(token, now=datetime.now(UTC))


def test_digest_is_stable_and_not_the_token() -> None:
    assert token_digest("abc") == token_digest("abc") != "abc"


def test_a_remembered_token_is_accepted_only_with_the_key_and_text_that_verified_it() -> None:
    signed_by = SigningKeys.from_secret('{"keys": [{"kid": "k", "secret": "' + "a" * 40 + '"}]}')
    same_kid_other_secret = SigningKeys.from_secret('{"keys": [{"kid": "k", "secret": "' + "b" * 40 + '"}]}')
    codec = TokenCodec(signed_by, issuer="i", audience="a")
    token = codec.issue_access(user_id=7, role="patient", token_version=0, now=NOW, ttl=timedelta(minutes=30))
    assert codec.decode_access(token, now=NOW).user_id == 7  # verified, and remembered
    with pytest.raises(Unauthenticated):
        TokenCodec(same_kid_other_secret, issuer="i", audience="a").decode_access(token, now=NOW)
    with pytest.raises(Unauthenticated):
        TokenCodec(signed_by, issuer="i", audience="other").decode_access(token, now=NOW)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
    with pytest.raises(Unauthenticated):
        codec.decode_access(tampered, now=NOW)
