"""Account rules that need a controllable clock or real concurrency, on real Postgres."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws
from sqlalchemy.orm import Session

from reservations.composition import Container
from reservations.config import load_settings
from reservations.domain.accounts import current_user
from reservations.domain.errors import Conflict, InvalidRequest, TooManyRequests, Unauthenticated, Unprocessable
from tests.builders import Clock, account_service, session_user, unique_email


def reset_token(body: str) -> str:
    """The token in a reset e-mail's body (its third paragraph)."""
    return body.split("\n\n")[2].strip()


def test_lockout_lifts_after_the_window(session: Session, container: Container, clock: Clock) -> None:
    email, password = session_user(container, session)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            account_service(container, session, clock()).login(email, "wrong-password")
        clock.advance(seconds=10)
    with pytest.raises(TooManyRequests) as locked:
        account_service(container, session, clock()).login(email, password)
    # The oldest failure was 50 s ago: it ages out of the 15-minute window in 850 s.
    assert 849 <= locked.value.retry_after_seconds <= 851
    clock.advance(seconds=locked.value.retry_after_seconds)
    assert account_service(container, session, clock()).login(email, password).access_token


def test_unknown_accounts_are_throttled_too(session: Session, container: Container, clock: Clock) -> None:
    stranger = unique_email()
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            account_service(container, session, clock()).login(stranger, "whatever1")
    with pytest.raises(TooManyRequests):
        account_service(container, session, clock()).login(stranger, "whatever1")


def test_access_token_expires_with_the_clock(session: Session, container: Container, clock: Clock) -> None:
    email, password = session_user(container, session)
    pair = account_service(container, session, clock()).login(email, password)
    clock.advance(minutes=29)
    claims = container.token_codec().decode_access(pair.access_token, now=clock())
    assert current_user(session, claims).email == email
    clock.advance(minutes=1)
    with pytest.raises(Unauthenticated, match="expired"):
        container.token_codec().decode_access(pair.access_token, now=clock())


def test_refresh_token_expires(session: Session, container: Container, clock: Clock) -> None:
    email, password = session_user(container, session)
    pair = account_service(container, session, clock()).login(email, password)
    clock.advance(days=14, seconds=1)
    with pytest.raises(Unauthenticated):
        account_service(container, session, clock()).refresh(pair.refresh_token)


def test_reset_token_valid_for_thirty_minutes_only(session: Session, container: Container, clock: Clock) -> None:
    email, _ = session_user(container, session)
    message = account_service(container, session, clock()).request_password_reset(email, reset_url="http://x")
    assert message is not None and message.to == email
    token = reset_token(message.body)
    assert "30 minutes" in message.body
    clock.advance(minutes=30)
    with pytest.raises(InvalidRequest):
        account_service(container, session, clock()).confirm_password_reset(token, "new-password")
    again = account_service(container, session, clock()).request_password_reset(email, reset_url="http://x")
    assert again is not None
    fresh = reset_token(again.body)
    clock.advance(minutes=29)
    account_service(container, session, clock()).confirm_password_reset(fresh, "new-password")
    assert account_service(container, session, clock()).login(email, "new-password").access_token


def test_reset_stores_only_a_digest(session: Session, container: Container, clock: Clock) -> None:
    from sqlalchemy import select

    from reservations.adapters.db import PasswordResetToken

    email, _ = session_user(container, session)
    message = account_service(container, session, clock()).request_password_reset(email, reset_url="http://x")
    assert message is not None
    token = reset_token(message.body)
    stored = session.scalars(select(PasswordResetToken.token_hash)).all()
    assert token not in stored
    assert all(len(digest) == 64 for digest in stored)


def test_password_hash_is_argon2id(session: Session, container: Container, clock: Clock) -> None:
    user = account_service(container, session, clock()).register(
        name="U", email=unique_email(), password="password1", role="patient"
    )
    assert user.password_hash.startswith("$argon2id$")


def test_invalid_timezone_and_password_are_rejected(session: Session, container: Container, clock: Clock) -> None:
    accounts = account_service(container, session, clock())
    with pytest.raises(Unprocessable):
        accounts.register(name="U", email=unique_email(), password="password1", role="provider", timezone="Nowhere/X")
    with pytest.raises(Unprocessable):
        accounts.register(name="U", email=unique_email(), password="short", role="patient")


def test_concurrent_registrations_of_one_email_have_one_winner(settings) -> None:  # type: ignore[no-untyped-def]
    container = Container(settings)
    email = unique_email()
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            container.accounts.register(
                None,
                name="U",
                email=email.upper() if i % 2 else email,
                password="password1",
                role="patient",
                timezone="UTC",
            )
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")
        except Exception as error:  # recorded so the assertion shows it
            outcomes.append(repr(error)[:300])

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    container.close()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]


def test_jwt_secret_from_secrets_manager_with_key_rotation(settings) -> None:  # type: ignore[no-untyped-def]
    from aws_lambda_powertools.utilities import parameters

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        old = {"kid": "k1", "secret": "first-secret-long-enough-for-hs256-0000"}
        new = {"kid": "k2", "secret": "second-secret-long-enough-for-hs256-000"}
        arn = client.create_secret(Name="jwt", SecretString=json.dumps({"keys": [old]}))["ARN"]
        parameters.clear_caches()
        aws_settings = load_settings(
            database_url=settings.database_url, app_env="aws", jwt_secret_arn=arn, email_sender="no-reply@example.com"
        )
        container = Container(aws_settings)
        now = container.now()
        token = container.token_codec().issue_access(
            user_id=1, role="patient", token_version=0, now=now, ttl=timedelta(minutes=5)
        )
        # Rotate: the new key signs, the old one still verifies until it is removed.
        client.put_secret_value(SecretId=arn, SecretString=json.dumps({"keys": [new, old]}))
        parameters.clear_caches()
        rotated = container.token_codec()
        assert rotated.decode_access(token, now=now).user_id == 1
        fresh = rotated.issue_access(user_id=2, role="patient", token_version=0, now=now, ttl=timedelta(minutes=5))
        import jwt

        assert jwt.get_unverified_header(fresh)["kid"] == "k2"
        client.put_secret_value(SecretId=arn, SecretString=json.dumps({"keys": [new]}))
        parameters.clear_caches()
        with pytest.raises(Unauthenticated):
            container.token_codec().decode_access(token, now=now)
        parameters.clear_caches()


def test_a_short_key_from_secrets_manager_is_refused_without_echoing_it(settings) -> None:  # type: ignore[no-untyped-def]
    from aws_lambda_powertools.utilities import parameters

    from reservations.config import ConfigurationError

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        keys = [{"kid": "long", "secret": "x" * 32}, {"kid": "short", "secret": "only-31-bytes-long-0123456789ab"}]
        arn = client.create_secret(Name="jwt-short", SecretString=json.dumps({"keys": keys}))["ARN"]
        parameters.clear_caches()
        aws_settings = load_settings(
            database_url=settings.database_url, app_env="aws", jwt_secret_arn=arn, email_sender="no-reply@example.com"
        )
        with pytest.raises(ConfigurationError, match="short") as refused:
            Container(aws_settings).token_codec()
        assert "only-31-bytes" not in str(refused.value)
        parameters.clear_caches()
