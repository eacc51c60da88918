"""Database credentials: DATABASE_URL, or a Secrets Manager secret of the RDS shape that
is re-read for every new connection, so a rotated password is picked up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from reservations.config import ConfigurationError, Settings

SECRET_CACHE_SECONDS = 300


def url_from_rds_secret(secret: Mapping[str, Any], *, host: str | None = None) -> str:
    """The SQLAlchemy URL for a secret of the RDS shape (username, password, host, port,
    dbname); ``host`` overrides the secret's, e.g. with the RDS Proxy endpoint."""
    missing = [key for key in ("username", "password") if not secret.get(key)]
    if not (host or secret.get("host")):
        missing.append("host")
    if missing:
        raise ConfigurationError(f"DATABASE_SECRET_ARN: the secret has no {', '.join(missing)}")
    url = URL.create(
        "postgresql+pg8000",
        username=str(secret["username"]),
        password=str(secret["password"]),
        host=host or str(secret["host"]),
        port=int(secret.get("port") or 5432),
        database=str(secret.get("dbname") or "postgres"),
    )
    return url.render_as_string(hide_password=False)


def database_secret(settings: Settings) -> Mapping[str, Any]:
    """The DATABASE_SECRET_ARN secret as a mapping (Powertools caches it for a while)."""
    from aws_lambda_powertools.utilities import parameters

    assert settings.database_secret_arn
    value = parameters.get_secret(settings.database_secret_arn, transform="json", max_age=SECRET_CACHE_SECONDS)
    if not isinstance(value, Mapping):
        raise ConfigurationError("DATABASE_SECRET_ARN: the secret is not a JSON object of the RDS shape")
    return value


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the URL built from the DATABASE_SECRET_ARN secret when one is set."""
    if not settings.database_secret_arn:
        return settings.database_url
    return url_from_rds_secret(database_secret(settings), host=settings.database_host)


def refresh_credentials_on_connect(engine: Engine, settings: Settings) -> None:
    """Take user and password from the (cached) secret for every new connection, so a
    rotated password is picked up without recycling the container."""

    @event.listens_for(engine, "do_connect")
    def _fresh_credentials(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        secret = database_secret(settings)
        cparams["user"] = str(secret["username"])
        cparams["password"] = str(secret["password"])


class RedisSecretCredentials:
    """redis-py credentials from a Secrets Manager secret `{"username", "password"}` (the
    cache's ACL user), read when a connection opens, so a rotated password is picked up
    once Powertools' cache of it expires."""

    def __init__(self, secret_arn: str) -> None:
        self._secret_arn = secret_arn

    def get_credentials(self) -> tuple[str, str]:
        from aws_lambda_powertools.utilities import parameters

        secret = parameters.get_secret(self._secret_arn, transform="json", max_age=SECRET_CACHE_SECONDS)
        if not isinstance(secret, Mapping) or not secret.get("username") or not secret.get("password"):
            raise ConfigurationError("REDIS_SECRET_ARN: the secret needs a username and a password")
        return str(secret["username"]), str(secret["password"])

    async def get_credentials_async(self) -> tuple[str, str]:
        return self.get_credentials()
