"""Settings read from the environment (and `.env`); validated once, at start-up.

Only this module and the entry points read the environment: domain services receive the
values they need as arguments.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/reservations"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Accepted only when APP_ENV is local or test, so a forgotten secret never reaches AWS.
LOCAL_PLACEHOLDER_SECRET = "local-development-secret-do-not-use-in-production"  # noqa: S105
_PLACEHOLDER_SECRETS = {
    "",
    "changeme",
    "change-me",
    "secret",
    "your_secret_key",
    "your-secret-key",
    LOCAL_PLACEHOLDER_SECRET,
}
MIN_SECRET_LENGTH = 32
# The user:password@ part as SQLAlchemy's make_url reads it (its own pattern), without
# importing SQLAlchemy at start-up: the docs function never needs it.
_URL_PASSWORD = re.compile(r"[\w+]+://[^:/]*:(?P<password>[^@]*)@")


class ConfigurationError(RuntimeError):
    """Raised at start-up when a setting is missing or invalid; names the variable."""


def normalise_database_url(url: str) -> str:
    """Accept the plain `postgresql://` URLs people already have and pick our driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+pg8000://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    app_env: Literal["local", "test", "aws"] = "local"
    database_url: str = DEFAULT_DATABASE_URL
    # A password inside DATABASE_URL sits in plaintext in the function's environment: on
    # AWS use DATABASE_SECRET_ARN, or allow it explicitly (a throwaway stack, say).
    allow_database_url_password: bool = False
    # A Secrets Manager secret of the RDS shape (username, password, host, port, dbname):
    # when set, it supplies the connection instead of DATABASE_URL (read in http.runtime).
    database_secret_arn: str | None = None
    # Overrides the secret's host, e.g. with the RDS Proxy endpoint in front of the cluster.
    database_host: str | None = None
    db_pool_size: int = Field(default=1, ge=1, le=50)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # A pooled connection idle longer than this is checked with `SELECT 1` before use;
    # one used more recently is trusted (0: check before every request).
    db_ping_after_idle_seconds: float = Field(default=5.0, ge=0)
    # Unset: TLS when the connection comes from DATABASE_SECRET_ARN (RDS), none otherwise.
    database_tls: bool | None = None
    redis_url: str = DEFAULT_REDIS_URL
    # A Secrets Manager secret {"username", "password"} of the cache's ACL user.
    redis_secret_arn: str | None = None
    jwt_secret_key: SecretStr | None = None
    jwt_secret_arn: str | None = None
    jwt_issuer: str = "reservations"
    jwt_audience: str = "reservations-api"
    access_token_expire_minutes: float = Field(default=30, gt=0, le=24 * 60)
    refresh_token_expire_days: float = Field(default=14, gt=0, le=365)
    confirmation_grace_period_minutes: float = Field(default=30, gt=0, le=7 * 24 * 60)
    min_booking_notice_hours: float = Field(default=24, ge=0, le=24 * 365)
    max_booking_horizon_days: int = Field(default=90, ge=1, le=3650)
    max_active_holds: int = Field(default=3, ge=1, le=100)
    cache_expiry_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_lockout_minutes: float = Field(default=15, gt=0, le=24 * 60)
    # The looser ceiling per account, whatever the addresses (LOGIN_MAX_FAILURES is per
    # account and address, so an attacker cannot lock the owner out from elsewhere).
    login_account_max_failures: int = Field(default=50, ge=1, le=10_000)
    # Per-client limits in the `limits` notation; unset: the defaults below (x10 locally).
    rate_limit_per_address: str | None = None
    rate_limit_per_account: str | None = None
    password_reset_cooldown_minutes: float = Field(default=5, ge=0, le=24 * 60)
    max_future_appointments_per_patient: int = Field(default=10, ge=1, le=1000)
    require_verified_email: bool = False
    password_reset_expire_minutes: float = Field(default=30, gt=0, le=24 * 60)
    # argon2id cost; tests lower it, production keeps the library's recommended values.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=1024, le=1048576)
    email_sender: str | None = None
    password_reset_url: str = "http://127.0.0.1:3000/password-reset/confirm"  # noqa: S105
    default_timezone: str = "UTC"
    # Events and integrations (README, "Events, webhooks and e-mail").
    event_bus_name: str | None = None
    publish_after_commit: bool = True
    outbox_retention_days: int = Field(default=7, ge=1, le=3650)
    # Appointments that ended longer ago, with their histories, are purged; audit entries
    # after AUDIT_RETENTION_DAYS (default: the same). Postgres keeps both 30 days at least.
    retention_days: int = Field(default=730, ge=30, le=36500)
    audit_retention_days: int | None = Field(default=None, ge=30, le=36500)
    # Local mode also writes every message as an .eml file here (default .local/mail).
    mail_dir: str | None = None
    reminder_hours_before: str = "24"
    # Unset: private and loopback webhook targets are allowed only when APP_ENV=local.
    webhook_allow_private: bool | None = None
    max_webhooks_per_owner: int = Field(default=20, ge=1, le=1000)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    # Read by Powertools too; the one source of the service name and metrics namespace.
    powertools_service_name: str = "reservations"
    powertools_metrics_namespace: str = "Reservations"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = normalise_database_url(value.strip())
        if not value.startswith("postgresql+"):
            raise ValueError("must be a PostgreSQL URL such as postgresql://user@host:5432/db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (empty disables the cache)")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, OSError) as error:  # not found, or a tzdata folder
            raise ValueError(f"unknown time zone '{value}'") from error
        return value

    @field_validator("rate_limit_per_address", "rate_limit_per_account")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        if not value:
            return None
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("a rate in the limits notation, e.g. 60/minute or 5 per 10 seconds") from None
        return value

    @field_validator("reminder_hours_before")
    @classmethod
    def _reminder_hours(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts or not all(part.isdigit() and 1 <= int(part) <= 24 * 30 for part in parts):
            raise ValueError("a comma-separated list of whole hours between 1 and 720, e.g. 24 or 48,2")
        return ",".join(parts)

    @field_validator(
        "email_sender", "jwt_secret_arn", "database_secret_arn", "database_host", "event_bus_name", "mail_dir"
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _secret_policy(self) -> Settings:
        if self.jwt_secret_arn:
            return self
        secret = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else ""
        if self.app_env in ("local", "test"):
            return self
        if secret.strip().lower() in _PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                "JWT_SECRET_KEY: a real secret of at least "
                f"{MIN_SECRET_LENGTH} characters (or JWT_SECRET_ARN) is required when APP_ENV={self.app_env}"
            )
        return self

    @model_validator(mode="after")
    def _no_password_in_url_on_aws(self) -> Settings:
        if self.app_env == "aws" and not self.database_secret_arn and not self.allow_database_url_password:
            userinfo = _URL_PASSWORD.match(self.database_url)
            if userinfo and userinfo["password"]:
                raise ValueError(
                    "DATABASE_URL: a password in the URL is refused when APP_ENV=aws (it would sit in plaintext "
                    "in the function environment); use DATABASE_SECRET_ARN, or set ALLOW_DATABASE_URL_PASSWORD=true"
                )
        return self

    @model_validator(mode="after")
    def _mail_on_aws(self) -> Settings:
        if self.app_env == "aws" and not self.email_sender:
            raise ValueError(
                "EMAIL_SENDER: an SES-verified sender is required when APP_ENV=aws "
                "(without it reset and verification tokens could not be delivered)"
            )
        return self

    @property
    def address_rate(self) -> str:
        return self.rate_limit_per_address or ("600/minute" if self.app_env != "aws" else "60/minute")

    @property
    def account_rate(self) -> str:
        return self.rate_limit_per_account or ("100/minute" if self.app_env != "aws" else "10/minute")

    @property
    def reminder_hours(self) -> tuple[int, ...]:
        return tuple(sorted({int(part) for part in self.reminder_hours_before.split(",")}, reverse=True))

    @property
    def allows_private_webhooks(self) -> bool:
        return self.webhook_allow_private if self.webhook_allow_private is not None else self.app_env == "local"

    @property
    def mail_directory(self) -> str | None:
        return self.mail_dir or (".local/mail" if self.app_env == "local" else None)

    @property
    def cache_enabled(self) -> bool:
        return bool(self.redis_url)

    @property
    def database_uses_tls(self) -> bool:
        return self.database_tls if self.database_tls is not None else bool(self.database_secret_arn)

    def local_secret(self) -> str:
        """The signing secret when no Secrets Manager ARN is configured."""
        if self.jwt_secret_key and self.jwt_secret_key.get_secret_value():
            return self.jwt_secret_key.get_secret_value()
        return LOCAL_PLACEHOLDER_SECRET


# Values never echoed in a configuration error: secrets, and URLs that may carry credentials.
_NEVER_ECHOED = ("SECRET", "PASSWORD", "KEY", "TOKEN", "URL")


def _echo(name: str, value: object) -> str:
    if any(part in name for part in _NEVER_ECHOED):
        return ""
    return f" (got {json.dumps(value, default=str)[:80]})"


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; turn pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}{_echo(name, item.get('input'))}" if name != "settings" else message)
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def settings_from_environment() -> Settings:
    return load_settings()
