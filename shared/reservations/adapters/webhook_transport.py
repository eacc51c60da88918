"""Outgoing webhook delivery: one signed POST per call, safe to point at URLs chosen by users.

Requests are signed the Standard Webhooks way (webhook-id, webhook-timestamp and
webhook-signature headers, signed by the `standardwebhooks` library). A receiver URL is
someone else's input, so the transport guards against server-side request forgery:

- URLs are checked when registered (`check_url`) and again before every delivery.
- The host is resolved at delivery time, every answer must be a public address, and the
  connection goes to the address that was checked rather than to the name. Resolving
  again inside the HTTP client would let a DNS server answer a public address to the
  check and a private one to the connection (DNS rebinding).
- The instance metadata service is refused even where private addresses are allowed
  (local development), since it hands out the role credentials of the machine it runs on.
- Redirects are never followed: a receiver could use one to bounce the request inward.

Network problems never raise; they come back as a failed `DeliveryOutcome`.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import SplitResult, quote, urlsplit

import urllib3
from standardwebhooks import Webhook
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

MAX_URL_LENGTH = 2048
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "Reservations-Webhooks/1"
PORT_RANGE = "the port must be a number from 1 to 65535"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The EC2 metadata service hands out the host's role credentials. It is refused even where
# private addresses are allowed, since a development box on EC2 can reach it.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# inet_aton also reads the legacy forms "127.1", "0x7f.0.0.1" and "2130706433", which
# resolvers treat as addresses; a host made only of these characters may be one of them.
_LEGACY_IPV4_CHARS = re.compile(r"[0-9a-fx.]+")
_REQUEST_TARGET_SAFE = "!$&'()*+,/:;=?@~%[]"
_ERROR_DETAIL_LENGTH = 200

Resolver = Callable[[str, int], list[str]]


class WebhookUrlRefused(ValueError):
    """The URL is not one the transport will deliver to; the message says why."""


@dataclass(frozen=True)
class DeliveryOutcome:
    succeeded: bool
    status: int | None
    error: str | None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # ASCII host name, or the canonical text of an IP literal (no brackets)
    port: int
    literal: IPAddress | None
    host_header: str
    request_target: str


def system_resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses a v6 address routes to through a translation mechanism, which may reach
    a private v4 network even when the v6 address itself counts as global."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why this (already unwrapped) address must not be contacted, or None."""
    for candidate in (address, *_embedded_ipv4(address)):
        via = "" if candidate == address else f" (it leads to {candidate})"
        if candidate in METADATA_ADDRESSES:
            return f"the address {address} is the instance metadata service{via}"
        if not allow_private and not candidate.is_global:
            kind = "private" if candidate.is_private else "not a public address"
            return f"the address {address} is {kind}{via}"
    return None


def _literal_host(host: str) -> IPAddress | None:
    try:
        return _unwrap(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_IPV4_CHARS.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _ascii_host_name(host: str) -> str:
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise WebhookUrlRefused(f"the host {host!r} is not a valid name") from exc
    name = name.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise WebhookUrlRefused(f"the host {host!r} is not a valid name")
    return name


def _failed(error: str) -> DeliveryOutcome:
    return DeliveryOutcome(succeeded=False, status=None, error=error)


def _describe(exc: BaseException) -> str:
    """A short reason without urllib3's pool and URL decoration."""
    inner: BaseException = exc
    if isinstance(exc, NewConnectionError) and exc.__cause__ is not None:
        inner = exc.__cause__
    elif isinstance(exc, ProtocolError | SSLError) and exc.args and isinstance(exc.args[-1], BaseException):
        inner = exc.args[-1]
    text = str(inner) or type(inner).__name__
    return text[:_ERROR_DETAIL_LENGTH]


class WebhookTransport:
    def __init__(
        self,
        *,
        require_https: bool,
        allow_private: bool,
        timeout_seconds: float = 5.0,
        resolve: Resolver | None = None,
    ) -> None:
        self._require_https = require_https
        self._allow_private = allow_private
        self._timeout_seconds = timeout_seconds
        self._resolve = resolve or system_resolve
        # Built once: loading the CA bundle costs milliseconds per delivery otherwise.
        self._ssl_context = ssl.create_default_context()

    def check_url(self, url: str) -> str:
        return self._parse(url).url

    def _parse(self, url: str) -> _Target:
        scheme, parts, port = self._split(url)
        literal = _literal_host(parts.hostname or "")
        if literal is not None:
            refusal = _address_refusal(literal, allow_private=self._allow_private)
            if refusal:
                raise WebhookUrlRefused(refusal)
            host = str(literal)
        else:
            host = _ascii_host_name(parts.hostname or "")

        default_port = _DEFAULT_PORTS[scheme]
        effective_port = port or default_port
        authority = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
        if effective_port != default_port:
            authority = f"{authority}:{effective_port}"
        # http.client sends the request line as ASCII, so other characters go percent-encoded.
        request_target = quote(parts.path or "/", safe=_REQUEST_TARGET_SAFE)
        if parts.query:
            request_target += "?" + quote(parts.query, safe=_REQUEST_TARGET_SAFE)
        return _Target(
            url=f"{scheme}://{authority}{request_target}",
            scheme=scheme,
            host=host,
            port=effective_port,
            literal=literal,
            host_header=authority,
            request_target=request_target,
        )

    def _split(self, url: str) -> tuple[str, SplitResult, int | None]:
        if len(url) > MAX_URL_LENGTH:
            raise WebhookUrlRefused(f"webhook URLs must be at most {MAX_URL_LENGTH} characters")
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
            raise WebhookUrlRefused("webhook URLs must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise WebhookUrlRefused(f"the URL is not valid: {exc}") from exc
        try:
            port = parts.port
        except ValueError as exc:
            raise WebhookUrlRefused(PORT_RANGE) from exc
        scheme = parts.scheme.lower()
        if self._require_https and scheme != "https":
            raise WebhookUrlRefused("webhook URLs must use https")
        if scheme not in _DEFAULT_PORTS:
            raise WebhookUrlRefused("webhook URLs must use http or https")
        if "@" in parts.netloc:
            raise WebhookUrlRefused("webhook URLs must not contain a user name or password")
        if not parts.hostname:
            raise WebhookUrlRefused("webhook URLs need a host")
        if port == 0:
            raise WebhookUrlRefused(PORT_RANGE)
        if "%" in parts.hostname:
            raise WebhookUrlRefused("IPv6 zone identifiers are not allowed")
        return scheme, parts, port

    def post(self, url: str, *, secret: str, message_id: str, timestamp: datetime, body: bytes) -> DeliveryOutcome:
        if timestamp.utcoffset() is None:
            # datetime.timestamp() reads a naive value as local time, the signature as UTC.
            raise ValueError("the webhook timestamp must be timezone-aware")
        if not message_id or not message_id.isascii() or not message_id.isprintable() or " " in message_id:
            raise ValueError("the webhook message id must be printable ASCII without spaces")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, timestamp, body),
        }
        deadline = time.monotonic() + self._timeout_seconds

        try:
            target = self._parse(url)
        except WebhookUrlRefused as exc:
            return _failed(f"refused: {exc}")
        addresses = self._checked_addresses(target)
        if isinstance(addresses, DeliveryOutcome):
            return addresses
        headers["host"] = target.host_header

        failure = _failed("connection failed: no address")
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _failed("timeout")
            try:
                return self._post_to(address, target, headers, body, remaining, deadline)
            except NewConnectionError as exc:
                # Nothing was sent, so the next address (say, v4 after unreachable v6) is safe to try.
                failure = _failed(f"connection failed: {_describe(exc)}")
            except Urllib3Timeout:
                return _failed("timeout")
            except (HTTPError, OSError) as exc:
                return _failed(f"connection failed: {_describe(exc)}")
        return failure

    def _checked_addresses(self, target: _Target) -> list[IPAddress] | DeliveryOutcome:
        if target.literal is not None:
            return [target.literal]
        try:
            answers = self._resolve(target.host, target.port)
        except OSError as exc:
            return _failed(f"connection failed: cannot resolve {target.host}: {exc}")
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = _unwrap(ipaddress.ip_address(answer))
            except ValueError:
                return _failed(f"refused: {answer!r} is not an address")
            # A name with any non-public answer is refused, not filtered: a public receiver has no
            # reason to publish one, and a mixed answer is the shape of a rebinding attempt.
            refusal = _address_refusal(address, allow_private=self._allow_private)
            if refusal:
                return _failed(f"refused: {refusal}")
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            return _failed(f"connection failed: {target.host} has no address")
        return addresses

    def _post_to(
        self,
        address: IPAddress,
        target: _Target,
        headers: dict[str, str],
        body: bytes,
        remaining: float,
        deadline: float,
    ) -> DeliveryOutcome:
        pool_host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            # The certificate is checked against the name in the URL, not the address dialled.
            pool = urllib3.HTTPSConnectionPool(
                pool_host,
                target.port,
                maxsize=1,
                ssl_context=self._ssl_context,
                server_hostname=target.host,
                assert_hostname=target.host,
            )
        else:
            pool = urllib3.HTTPConnectionPool(pool_host, target.port, maxsize=1)
        with pool:
            response = pool.urlopen(
                "POST",
                target.request_target,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(total=remaining),
                preload_content=False,
                decode_content=False,
                assert_same_host=False,
            )
            try:
                status = response.status
                _drain(response, deadline)
            finally:
                response.close()
        if 200 <= status < 300:
            return DeliveryOutcome(succeeded=True, status=status, error=None)
        if 300 <= status < 400:
            return DeliveryOutcome(succeeded=False, status=status, error=f"redirect {status} not followed")
        return DeliveryOutcome(succeeded=False, status=status, error=f"status {status}")


def _drain(response: urllib3.BaseHTTPResponse, deadline: float) -> None:
    """Read (and discard) a bounded part of the body so the exchange ends cleanly; the status
    is already the verdict, so a receiver that streams on or stalls only ends the reading."""
    received = 0
    try:
        while received < MAX_RESPONSE_BYTES and time.monotonic() < deadline:
            chunk = response.read1(MAX_RESPONSE_BYTES - received, decode_content=False)
            if not chunk:
                return
            received += len(chunk)
    except (HTTPError, OSError):
        return
