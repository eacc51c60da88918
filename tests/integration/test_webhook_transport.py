"""The webhook transport against real HTTP(S) receivers on 127.0.0.1: signatures that the
standardwebhooks library verifies, failure verdicts (status, redirect, timeout, refused
connection), the address checks that keep deliveries away from private networks and the
metadata service, connecting to the checked address rather than resolving again, TLS
verified against the URL's host name, and the registration-time URL rules."""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook, WebhookVerificationError

from reservations.adapters.webhook_transport import (
    MAX_URL_LENGTH,
    DeliveryOutcome,
    WebhookTransport,
    WebhookUrlRefused,
    new_secret,
)

# Bytes that a re-serialising client would change: key order, spacing, non-ASCII, trailing newline.
BODY = '{"type": "booking.confirmed",  "data": {"name": "Zoë", "id": 7}}\n'.encode()
MESSAGE_ID = "msg_2Ktbt6BMRhR8lHbCD0w3lnYrNyT"
HOLD_LIMIT_SECONDS = 30


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """One HTTP server; what it answers is set by the test before delivering."""

    server: ThreadingHTTPServer
    status: int = 204
    response_headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _handler_for(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_box[0]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if receiver.hold is not None:
                receiver.hold.wait(HOLD_LIMIT_SECONDS)
            try:
                self.send_response(receiver.status)
                for name, value in receiver.response_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up first (the timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[tuple[Receiver, threading.Thread]] = []

    def start(tls: ssl.SSLContext | None = None) -> Receiver:
        box: list[Receiver] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(box))
        server.daemon_threads = True
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver = Receiver(server)
        box.append(receiver)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((receiver, thread))
        return receiver

    yield start
    for receiver, thread in started:
        if receiver.hold is not None:
            receiver.hold.set()
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)


def _transport(**overrides: object) -> WebhookTransport:
    options: dict[str, object] = {"require_https": False, "allow_private": True, "timeout_seconds": 5.0}
    options.update(overrides)
    return WebhookTransport(**options)  # type: ignore[arg-type]


def _deliver(transport: WebhookTransport, url: str, secret: str | None = None) -> DeliveryOutcome:
    return transport.post(
        url, secret=secret or new_secret(), message_id=MESSAGE_ID, timestamp=datetime.now(UTC), body=BODY
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- delivery ---------------------------------------------------------------------------


def test_a_delivery_verifies_with_the_standard_webhooks_library(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    secret = new_secret()
    timestamp = datetime.now(UTC)

    outcome = _transport().post(
        receiver.url("/hooks/in?tenant=4"), secret=secret, message_id=MESSAGE_ID, timestamp=timestamp, body=BODY
    )

    assert outcome == DeliveryOutcome(succeeded=True, status=204, error=None)
    [request] = receiver.requests
    assert request.path == "/hooks/in?tenant=4"
    assert request.body == BODY
    assert request.headers["webhook-id"] == MESSAGE_ID
    assert request.headers["webhook-timestamp"] == str(int(timestamp.timestamp()))
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Reservations-Webhooks/1"
    assert Webhook(secret).verify(request.body, request.headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b"7", b"8"), request.headers)


@pytest.mark.parametrize("status", [200, 202])
def test_any_2xx_is_success(start_receiver: Callable[..., Receiver], status: int) -> None:
    receiver = start_receiver()
    receiver.status = status

    assert _deliver(_transport(), receiver.url()) == DeliveryOutcome(succeeded=True, status=status, error=None)


@pytest.mark.parametrize("status", [400, 500])
def test_an_error_status_is_a_failure_with_that_status(start_receiver: Callable[..., Receiver], status: int) -> None:
    receiver = start_receiver()
    receiver.status = status

    outcome = _deliver(_transport(), receiver.url())

    assert not outcome.succeeded
    assert outcome.status == status
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_not_followed(start_receiver: Callable[..., Receiver], status: int) -> None:
    elsewhere = start_receiver()
    receiver = start_receiver()
    receiver.status = status
    receiver.response_headers = {"location": elsewhere.url("/stolen")}

    outcome = _deliver(_transport(), receiver.url())

    assert outcome == DeliveryOutcome(succeeded=False, status=status, error=f"redirect {status} not followed")
    assert len(receiver.requests) == 1
    assert elsewhere.requests == []


def test_a_receiver_slower_than_the_timeout_is_a_timeout(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    receiver.hold = threading.Event()

    outcome = _deliver(_transport(timeout_seconds=0.5), receiver.url())
    receiver.hold.set()

    assert outcome == DeliveryOutcome(succeeded=False, status=None, error="timeout")
    # The request got there: the time ran out waiting for the answer, not for a connection.
    assert len(receiver.requests) == 1


def test_nothing_listening_is_a_connection_failure_not_an_exception() -> None:
    outcome = _deliver(_transport(), f"http://127.0.0.1:{_free_port()}/hook")

    assert not outcome.succeeded
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed: ")


def test_an_unresolvable_name_is_a_connection_failure() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    outcome = _deliver(_transport(resolve=fail), "https://receiver.test/hook")

    assert outcome.succeeded is False
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed: cannot resolve receiver.test")


def test_a_naive_timestamp_is_a_programming_error() -> None:
    # datetime.timestamp() would read it as local time while the signature reads it as UTC.
    with pytest.raises(ValueError, match="timezone-aware"):
        _transport().post(
            "http://127.0.0.1:9/hook", secret=new_secret(), message_id=MESSAGE_ID, timestamp=datetime.now(), body=BODY
        )


# --- addresses --------------------------------------------------------------------------


def test_a_private_literal_address_is_refused(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    transport = _transport(allow_private=False)

    outcome = _deliver(transport, receiver.url())

    assert outcome == DeliveryOutcome(succeeded=False, status=None, error="refused: the address 127.0.0.1 is private")
    with pytest.raises(WebhookUrlRefused, match=re.escape("127.0.0.1 is private")):
        transport.check_url(receiver.url())
    assert receiver.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        ["10.0.0.7"],
        ["93.184.216.34", "127.0.0.1"],
        ["127.0.0.1", "93.184.216.34"],
        ["::ffff:127.0.0.1"],
        ["::1"],
        ["169.254.10.1"],
    ],
)
def test_a_name_with_any_non_public_answer_is_refused(
    start_receiver: Callable[..., Receiver], answer: list[str]
) -> None:
    receiver = start_receiver()
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answer

    outcome = _deliver(_transport(allow_private=False, resolve=resolve), receiver.url(host="receiver.test"))

    assert outcome.succeeded is False
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused: the address ")
    assert asked == [("receiver.test", receiver.port)]
    assert receiver.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        "64:ff9b::a00:7",  # NAT64 well-known prefix
        "2002:a00:7::",  # 6to4
        "::a00:7",  # IPv4-compatible
    ],
)
def test_an_ipv6_address_that_leads_to_a_private_ipv4_address_is_refused(answer: str) -> None:
    # The standard library counts these prefixes as global; the IPv4 address they carry is not.
    transport = _transport(allow_private=False, resolve=lambda host, port: [answer])

    outcome = _deliver(transport, "https://receiver.test/hook")

    assert outcome.error == f"refused: the address {answer} is private (it leads to 10.0.0.7)"


def test_an_ipv4_mapped_literal_is_unwrapped_before_checking(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    url = receiver.url(host="[::ffff:127.0.0.1]")

    refused = _deliver(_transport(allow_private=False), url)
    assert refused.error == "refused: the address 127.0.0.1 is private"
    with pytest.raises(WebhookUrlRefused, match=re.escape("127.0.0.1 is private")):
        _transport(allow_private=False).check_url(url)
    assert receiver.requests == []

    # Where private addresses are allowed, the unwrapped IPv4 address is the one dialled.
    assert _deliver(_transport(allow_private=True), url).succeeded
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    "answer", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"]
)
def test_the_metadata_service_is_refused_even_when_private_addresses_are_allowed(answer: str) -> None:
    transport = _transport(allow_private=True, resolve=lambda host, port: ["127.0.0.1", answer])

    outcome = _deliver(transport, "http://metadata.test/latest/meta-data/")

    assert outcome.succeeded is False
    assert outcome.error is not None
    assert outcome.error.startswith("refused: ")
    assert "instance metadata service" in outcome.error


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("[fd00:ec2::254]", "fd00:ec2::254"),
        ("[::ffff:169.254.169.254]", "169.254.169.254"),
    ],
)
def test_a_metadata_literal_is_refused_at_registration_and_delivery(host: str, address: str) -> None:
    transport = _transport(allow_private=True)
    url = f"http://{host}/latest/meta-data/iam/security-credentials/"
    reason = f"the address {address} is the instance metadata service"

    with pytest.raises(WebhookUrlRefused, match=re.escape(reason)):
        transport.check_url(url)
    assert _deliver(transport, url) == DeliveryOutcome(succeeded=False, status=None, error=f"refused: {reason}")


def test_the_connection_goes_to_the_checked_address_without_resolving_again(
    start_receiver: Callable[..., Receiver],
) -> None:
    receiver = start_receiver()
    # A rebinding resolver: the first answer is the one checked, any later one would be a lie.
    answers = iter([["127.0.0.1"], ["10.66.66.66"]])
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return next(answers)

    outcome = _deliver(_transport(allow_private=True, resolve=resolve), receiver.url("/hook", host="receiver.test"))

    assert outcome == DeliveryOutcome(succeeded=True, status=204, error=None)
    assert asked == [("receiver.test", receiver.port)]
    [request] = receiver.requests
    assert request.headers["host"] == f"receiver.test:{receiver.port}"


def test_the_next_address_is_tried_when_one_refuses_the_connection(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    # ::1 on the receiver's port has no listener (the receiver only binds 127.0.0.1).
    transport = _transport(allow_private=True, resolve=lambda host, port: ["::1", "127.0.0.1"])

    outcome = _deliver(transport, receiver.url(host="receiver.test"))

    assert outcome.succeeded
    assert len(receiver.requests) == 1


# --- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a certificate for receiver.test signed by it."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("receiver.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file = directory / "receiver.pem"
    chain_file.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain_file)
    return Certificates(ca_file=ca_file, server=server)


def _to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_https_is_verified_against_the_host_name_in_the_url(
    start_receiver: Callable[..., Receiver], certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's default verify paths honour SSL_CERT_FILE, so the default context trusts the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    receiver = start_receiver(tls=certificates.server)
    transport = _transport(require_https=True, allow_private=True, resolve=_to_loopback)
    secret = new_secret()

    outcome = _deliver(transport, receiver.url(host="receiver.test", scheme="https"), secret)

    assert outcome == DeliveryOutcome(succeeded=True, status=204, error=None)
    [request] = receiver.requests
    assert request.headers["host"] == f"receiver.test:{receiver.port}"
    Webhook(secret).verify(request.body, request.headers)


def test_https_to_a_name_the_certificate_does_not_cover_fails(
    start_receiver: Callable[..., Receiver], certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    receiver = start_receiver(tls=certificates.server)
    transport = _transport(require_https=True, allow_private=True, resolve=_to_loopback)

    outcome = _deliver(transport, receiver.url(host="other.test", scheme="https"))

    assert outcome.succeeded is False
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed: ")
    assert receiver.requests == []


def test_https_with_an_untrusted_certificate_fails(
    start_receiver: Callable[..., Receiver], certificates: Certificates
) -> None:
    receiver = start_receiver(tls=certificates.server)
    transport = _transport(require_https=True, allow_private=True, resolve=_to_loopback)

    outcome = _deliver(transport, receiver.url(host="receiver.test", scheme="https"))

    assert outcome.succeeded is False
    assert outcome.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert receiver.requests == []


# --- registration -----------------------------------------------------------------------


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"check_url resolved {host}")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/hook", "must use https"),
        ("https://user:pass@example.com/hook", "user name or password"),
        ("https://token@example.com/hook", "user name or password"),
        ("https:///hook", "need a host"),
        ("https://:443/hook", "need a host"),
        ("/hook", "must use https"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, f"at most {MAX_URL_LENGTH} characters"),
        ("https://example.com:0/hook", "the port must be a number from 1 to 65535"),
        ("https://example.com:65536/hook", "the port must be a number from 1 to 65535"),
        ("https://example.com:http/hook", "the port must be a number from 1 to 65535"),
        ("https://[::1/hook", "not valid"),
        ("https://example.com/a b", "spaces or control characters"),
        ("https://example.com/\r\nx-injected: 1", "spaces or control characters"),
        ("https://exa$mple.com/hook", "not a valid name"),
        ("https://a..b/hook", "not a valid name"),
        ("https://[fe80::1%25eth0]/hook", "zone"),
        ("https://10.0.0.5/hook", "the address 10.0.0.5 is private"),
        ("https://[::1]/hook", "the address ::1 is private"),
        ("https://0x7f.1/hook", "the address 127.0.0.1 is private"),
        ("https://2130706433/hook", "the address 127.0.0.1 is private"),
        ("https://100.64.0.1/hook", "the address 100.64.0.1 is not a public address"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    transport = _transport(require_https=True, allow_private=False, resolve=_no_dns)

    with pytest.raises(WebhookUrlRefused, match=re.escape(reason)):
        transport.check_url(url)


def test_check_url_without_https_required_still_refuses_other_schemes() -> None:
    transport = _transport(require_https=False, allow_private=False, resolve=_no_dns)

    with pytest.raises(WebhookUrlRefused, match="must use http or https"):
        transport.check_url("ftp://example.com/hook")
    with pytest.raises(WebhookUrlRefused, match="must use http or https"):
        transport.check_url("file:///etc/passwd")
    assert transport.check_url("http://example.com/hook") == "http://example.com/hook"


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("HTTPS://Example.COM:443/hook?a=1&b=%2F#fragment", "https://example.com/hook?a=1&b=%2F"),
        ("https://example.com.:8443", "https://example.com:8443/"),
        ("https://bücher.example/häuser", "https://xn--bcher-kva.example/h%C3%A4user"),
        ("https://93.184.216.34/hook", "https://93.184.216.34/hook"),
        ("https://[2606:2800:220:1:248:1893:25c8:1946]:8443/h", "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/h"),
    ],
)
def test_check_url_accepts_and_normalises_without_resolving(url: str, normalised: str) -> None:
    transport = _transport(require_https=True, allow_private=False, resolve=_no_dns)

    assert transport.check_url(url) == normalised


def test_private_literals_are_accepted_where_private_addresses_are_allowed() -> None:
    transport = _transport(require_https=False, allow_private=True, resolve=_no_dns)

    assert transport.check_url("http://127.0.0.1:3000/hook") == "http://127.0.0.1:3000/hook"
    assert transport.check_url("http://[::1]:3000/hook") == "http://[::1]:3000/hook"


def test_a_refused_url_at_delivery_is_an_outcome_not_an_exception(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()

    outcome = _deliver(_transport(require_https=True, allow_private=True), receiver.url())

    assert outcome == DeliveryOutcome(succeeded=False, status=None, error="refused: webhook URLs must use https")
    assert receiver.requests == []


# --- secrets ----------------------------------------------------------------------------


def test_new_secrets_are_standard_webhooks_secrets_of_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()

    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    Webhook(first)  # the library accepts it as a key
