"""Settings validation: pure, no sockets."""

from __future__ import annotations

import pytest

from reservations.config import ConfigurationError, load_settings


def test_defaults() -> None:
    settings = load_settings(database_url="postgresql://u@h:5432/db")
    assert settings.database_url == "postgresql+pg8000://u@h:5432/db"
    assert settings.access_token_expire_minutes == 30
    assert settings.confirmation_grace_period_minutes == 30
    assert settings.min_booking_notice_hours == 24
    assert settings.max_booking_horizon_days == 90
    assert settings.cache_expiry_seconds == 3600


def test_grace_period_is_a_float_so_tests_can_use_seconds() -> None:
    assert load_settings(confirmation_grace_period_minutes="0.05").confirmation_grace_period_minutes == 0.05


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "abc"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
        ("CACHE_EXPIRY_SECONDS", "-1"),
        ("MIN_BOOKING_NOTICE_HOURS", "soon"),
        ("MAX_BOOKING_HORIZON_DAYS", "0"),
        ("DATABASE_URL", "mysql://x/y"),
        ("REDIS_URL", "http://cache"),
        ("APP_ENV", "staging"),
        ("CONFIRMATION_GRACE_PERIOD_MINUTES", "nan-ish"),
    ],
)
def test_invalid_values_fail_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


@pytest.mark.parametrize("secret", [None, "changeme", "your_secret_key", "short-secret"])
def test_placeholder_secret_refused_outside_local_mode(monkeypatch: pytest.MonkeyPatch, secret: str | None) -> None:
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    if secret is not None:
        monkeypatch.setenv("JWT_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        load_settings(app_env="aws")


def test_placeholder_secret_allowed_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    assert load_settings(app_env="local").local_secret()


def test_secret_arn_satisfies_aws_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    settings = load_settings(
        app_env="aws", jwt_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:jwt", email_sender="no-reply@x.org"
    )
    assert settings.jwt_secret_arn


def test_aws_mode_refuses_to_start_without_a_mail_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAIL_SENDER", raising=False)
    with pytest.raises(ConfigurationError, match="EMAIL_SENDER"):
        load_settings(app_env="aws", jwt_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:jwt")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DATABASE_URL", "mysql://admin:hunter2-secret@db/x"), ("REDIS_URL", "http://:hunter2-secret@cache:6379")],
)
def test_configuration_errors_never_echo_credentials(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)


def test_rate_limits_take_the_limits_notation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_ADDRESS", "lots")
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_PER_ADDRESS"):
        load_settings()
    monkeypatch.setenv("RATE_LIMIT_PER_ADDRESS", "5 per 10 seconds")
    assert load_settings().address_rate == "5 per 10 seconds"


def test_environment_wins_over_dotenv(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("CACHE_EXPIRY_SECONDS=10\nMAX_BOOKING_HORIZON_DAYS=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHE_EXPIRY_SECONDS", "20")
    settings = load_settings()
    assert settings.cache_expiry_seconds == 20
    assert settings.max_booking_horizon_days == 7


def test_aws_mode_refuses_a_password_in_the_database_url_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    aws = {
        "app_env": "aws",
        "jwt_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:jwt",
        "email_sender": "a@b.org",
    }
    with pytest.raises(ConfigurationError, match="DATABASE_URL") as refused:
        load_settings(**aws, database_url="postgresql://api:s3cret-pw@db:5432/app")
    assert "s3cret-pw" not in str(refused.value)
    assert load_settings(**aws, database_url="postgresql://api@db:5432/app")
    assert load_settings(**aws, database_url="postgresql://api:s3cret-pw@db:5432/app", allow_database_url_password=True)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://api:s3cret@db:5432/app",
        "postgresql://api@db:5432/app",
        "postgresql://api:@db/app",
        "postgresql://u:pa/ss@h/db",
        "postgresql://u:p@ss@h/db",
        "postgresql://u:p%40x@h/db",
        "postgresql://u:p?w@h/db",
        "postgresql://h:5432/db?x=a@b",
        "postgresql://h:5432/db",
        "postgresql:///db",
        "postgresql://[::1]:5432/db",
        "postgresql://u:pw@[::1]:5432/db",
    ],
)
def test_a_password_in_the_url_is_found_as_sqlalchemy_finds_it(url: str) -> None:
    """The check reads the URL without SQLAlchemy (not loaded at start-up), the same way."""
    from sqlalchemy.engine import make_url

    aws = {
        "app_env": "aws",
        "jwt_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:jwt",
        "email_sender": "a@b.org",
    }
    if make_url(url).password:
        with pytest.raises(ConfigurationError, match="DATABASE_URL"):
            load_settings(**aws, database_url=url)
    else:
        assert load_settings(**aws, database_url=url)
