"""The cache's ACL user from REDIS_SECRET_ARN (Secrets Manager through moto) against a real
redis-server whose default user is off: the slot cache and the rate limiter both sign in,
and stay inside the key patterns the user may touch."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from reservations.composition import Container
from reservations.config import Settings
from tests.redis_server import RedisServer

APP_USER, APP_PASSWORD = "reservations-test-app", "app-password-0123456789"


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        admin = server.client()
        admin.execute_command(
            "ACL", "SETUSER", APP_USER, "on", f">{APP_PASSWORD}", "~provider:*", "~ratelimit*", "+@all", "-@dangerous"
        )
        admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-password", "~*", "+@all")
        admin.execute_command("ACL", "SETUSER", "default", "off")
        yield server


def container_with_secret(settings: Settings, server: RedisServer, password: str) -> Container:
    from aws_lambda_powertools.utilities import parameters

    client = boto3.client("secretsmanager", region_name="us-east-1")
    secret = {"username": APP_USER, "password": password}
    arn = client.create_secret(Name=f"cache-{password[:4]}", SecretString=json.dumps(secret))["ARN"]
    parameters.clear_caches()
    return Container(settings.model_copy(update={"redis_url": server.url(), "redis_secret_arn": arn}))


def test_the_cache_and_the_limiter_sign_in_as_the_apps_user(settings: Settings, locked_redis: RedisServer) -> None:
    with mock_aws():
        container = container_with_secret(settings, locked_redis, APP_PASSWORD)
        try:
            first = container.rate_limiter.hit("3/minute", "token", "address", "192.0.2.1")
            second = container.rate_limiter.hit("3/minute", "token", "address", "192.0.2.1")
            assert (first.remaining, second.remaining) == (2, 1)  # counted in Redis, not failing open
            client = container.day_store.client  # type: ignore[attr-defined]
            client.set("provider:1:timeslots:2027-01-04", "x", ex=60)
            assert client.get("provider:1:timeslots:2027-01-04") == b"x"
        finally:
            container.close()


def test_a_wrong_password_fails_open_without_an_error(settings: Settings, locked_redis: RedisServer) -> None:
    with mock_aws():
        container = container_with_secret(settings, locked_redis, "wrong-password-000")
        try:
            verdicts = [container.rate_limiter.hit("1/minute", "token", "address", "192.0.2.2") for _ in range(3)]
            assert all(v.allowed for v in verdicts)  # not counted: the limiter could not sign in
        finally:
            container.close()
