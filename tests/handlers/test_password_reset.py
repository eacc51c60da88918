"""Forgot-password flow through the real handler, with mail sent through SES (moto)."""

from __future__ import annotations

import email
import os
import re
from collections.abc import Iterator
from email import policy

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.builders import unique_email
from tests.support import FunctionClient, load_function

SENDER = "no-reply@reservations.example.com"


@pytest.fixture
def ses_auth(database_url: str) -> Iterator[FunctionClient]:
    with mock_aws():
        boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
        os.environ["EMAIL_SENDER"] = SENDER
        try:
            client = FunctionClient(load_function("auth"))
            yield client
            client.close()
        finally:
            del os.environ["EMAIL_SENDER"]


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
    before = len(sent_messages())
    stranger = unique_email()
    unknown = ses_auth.post("/password-reset/request", json_body={"email": stranger})
    assert (known.status, known.body) == (unknown.status, unknown.body) == (202, known.body)
    assert len(sent_messages()) == before


def test_only_the_newest_reset_link_works(ses_auth: FunctionClient) -> None:
    user = register(ses_auth)
    ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
    ses_auth.post("/password-reset/request", json_body={"email": user["email"]})
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


def test_without_ses_the_log_names_the_recipient_but_never_the_token(
    auth: FunctionClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = register(auth)
    with caplog.at_level("INFO"):
        assert auth.post("/password-reset/request", json_body={"email": user["email"]}).status == 202
    [line] = [record.getMessage() for record in caplog.records if user["email"] in record.getMessage()]
    assert "token=" not in line and not re.search(r"[A-Za-z0-9_-]{40,}", line)
