"""Forgot-password flow through the real handler, with mail sent through SES (moto)."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from reservations.config import Settings
from tests.builders import empty_tables, private_database, unique_email
from tests.support import FunctionClient, load_function
from tests.world import container_of

SENDER = "no-reply@reservations.example.com"


@pytest.fixture(scope="module")
def reset_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "reset") as url:
        yield url


@pytest.fixture
def ses_auth(settings: Settings, reset_database: str) -> Iterator[FunctionClient]:
    """The auth function with SES (moto) as its mail service, on a database of its own (the
    dispatch pass that sends mail works on whole tables)."""
    empty_tables(reset_database)
    with mock_aws():
        boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
        client = FunctionClient(load_function("auth"))
        container_of(client).configure(
            **{**settings.model_dump(), "database_url": reset_database, "email_sender": SENDER}
        )
        client.module.container.__dict__.pop("mailer", None)
        yield client
        client.close()


def dispatch(client: FunctionClient) -> None:
    """What the events function does every minute: reset requests become tokens and mail."""
    container_of(client).events.dispatch_pass()


def sent_messages() -> list:
    """What SES sent, as raw RFC 5322 messages (mail goes out with SendRawEmail)."""
    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def to_of(message: object) -> list[str]:
    return list(getattr(message, "destinations", []))


def token_from(message: object) -> str:
    parsed = email.message_from_string(str(getattr(message, "raw_data", "")), policy=policy.default)
    body = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    match = re.search(r"^([A-Za-z0-9_-]{40,})$", body, re.MULTILINE)
    assert match, body
    return match.group(1)


def register(client: FunctionClient) -> dict:
    body = {"name": "Pat", "email": unique_email(), "password": "old-password", "role": "patient"}
    assert client.post("/register", json_body=body).status == 201
    return body


def test_request_sends_one_mail_through_ses_and_confirm_sets_the_password(ses_auth: FunctionClient) -> None:
    user = register(ses_auth)
    old_pair = ses_auth.post("/token", form={"username": user["email"], "password": "old-password"}).body
    response = ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
    assert response.status == 202
    dispatch(ses_auth)
    messages = [m for m in sent_messages() if user["email"] in to_of(m)]
    assert len(messages) == 1
    assert messages[0].source == SENDER
    token = token_from(messages[0])

    confirmed = ses_auth.post("/password-reset/confirm", json_body={"token": token, "new_password": "new-password"})
    assert confirmed.status == 200
    assert ses_auth.post("/token", form={"username": user["email"], "password": "new-password"}).status == 200
    assert ses_auth.post("/token", form={"username": user["email"], "password": "old-password"}).status == 401
    assert ses_auth.get("/me", token=old_pair["access_token"]).status == 401

    reused = ses_auth.post("/password-reset/confirm", json_body={"token": token, "new_password": "third-password"})
    assert reused.status == 400
    assert reused.body["code"] == "invalid_reset_token"


def test_unknown_email_gets_the_same_answer_and_no_mail(ses_auth: FunctionClient) -> None:
    user = register(ses_auth)
    known = ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
    dispatch(ses_auth)
    before = len(sent_messages())
    stranger = unique_email()
    unknown = ses_auth.post("/password-reset/request", json_body={"email": stranger})
    dispatch(ses_auth)
    assert (known.status, known.body) == (unknown.status, unknown.body) == (202, known.body)
    assert len(sent_messages()) == before


def test_only_the_newest_reset_link_works(ses_auth: FunctionClient) -> None:
    user = register(ses_auth)
    ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
    dispatch(ses_auth)
    container_of(ses_auth).clock = lambda: datetime.now(UTC) + timedelta(minutes=6)  # past the cooldown
    ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
    dispatch(ses_auth)
    first, second = (token_from(m) for m in sent_messages() if user["email"] in to_of(m))
    assert (
        ses_auth.post("/password-reset/confirm", json_body={"token": first, "new_password": "new-password"}).status
        == 400
    )
    assert (
        ses_auth.post("/password-reset/confirm", json_body={"token": second, "new_password": "new-password"}).status
        == 200
    )


@pytest.mark.parametrize(
    "body", [{"token": "made-up", "new_password": "new-password"}, {"token": "", "new_password": "x"}]
)
def test_bad_confirmations(ses_auth: FunctionClient, body: dict) -> None:
    response = ses_auth.post("/password-reset/confirm", json_body=body)
    assert response.status in (400, 422)
    assert response.status == (400 if body["token"] else 422)


def test_invalid_email_in_request_is_422(ses_auth: FunctionClient) -> None:
    assert ses_auth.post("/password-reset/request", json_body={"email": "nope"}).status == 422


def test_a_reset_token_reaches_no_log_line(ses_auth: FunctionClient, caplog: pytest.LogCaptureFixture) -> None:
    container_of(ses_auth).configure(email_sender=None)
    container_of(ses_auth).__dict__.pop("mailer", None)  # no SES: the log mailer
    user = register(ses_auth)
    with caplog.at_level("DEBUG"):
        assert ses_auth.post("/password-reset/request", json_body={"email": user["email"]}).status == 202
        dispatch(ses_auth)
    logged = [record.getMessage() for record in caplog.records]
    assert any(user["email"] in line for line in logged)  # the message went out (to the log mailer)
    assert not [line for line in logged if re.search(r"[A-Za-z0-9_-]{40,}", line)]


def test_one_mail_per_address_within_the_cooldown(ses_auth: FunctionClient) -> None:
    user = register(ses_auth)
    answers = [ses_auth.post("/password-reset/request", json_body={"email": user["email"]}) for _ in range(3)]
    dispatch(ses_auth)
    assert [a.status for a in answers] == [202, 202, 202]
    assert len([m for m in sent_messages() if user["email"] in to_of(m)]) == 1
