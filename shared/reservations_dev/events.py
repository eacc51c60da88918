"""API Gateway HTTP API payload format 2.0, both ways, and the EventBridge schedule event.

``build_event`` turns an HTTP request into the event AWS would send a function;
``to_http_response`` turns a handler's result back into the response API Gateway would
send (or raises ``MalformedResponse`` where API Gateway answers 500 instead).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.responses import Response

from reservations_dev.template import DEFAULT_ROUTE_KEY, ScheduledFunction

LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_API_ID = "localapi01"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Headers the response path recomputes itself; passing a handler's copy through could
# contradict the body actually sent.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def region() -> str:
    """The AWS region local events and contexts name: the environment's, else us-east-1."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


# --------------------------------------------------------------------------- request


def _is_text_media_type(content_type: str | None) -> bool:
    # HTTP APIs pass these bodies as text and base64-encode everything else
    # (form posts and a missing content type included).
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in ("application/json", "application/xml", "application/javascript")
        or media_type.endswith(("+json", "+xml"))
    )


def _format_request_time(moment: datetime) -> str:
    # strftime("%b") follows the locale; API Gateway always writes English months.
    utc = moment.astimezone(UTC)
    return f"{utc.day:02d}/{_MONTHS[utc.month - 1]}/{utc.year}:{utc:%H:%M:%S} +0000"


def _trace_id(moment: datetime) -> str:
    return f"Root=1-{int(moment.timestamp()):08x}-{secrets.token_hex(12)}"


def _domain(host_header: str | None) -> tuple[str, str]:
    host = (host_header or "localhost").strip()
    if host.startswith("["):  # [::1]:3000
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name, name.split(".", 1)[0]
    return name, name


def build_event(
    *,
    method: str,
    path: str,
    query_string: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    route_key: str = DEFAULT_ROUTE_KEY,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    protocol: str = "HTTP/1.1",
    scheme: str = "http",
    server_port: int | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event for one request.

    ``path`` is the percent-encoded request path and ``query_string`` the raw query, as
    received. Like API Gateway: header names are lower-cased and repeats joined with
    commas; ``Cookie`` headers become the ``cookies`` list; ``rawPath``, path and query
    parameters are URL-decoded (``rawQueryString`` is not); optional keys
    (``cookies``, ``queryStringParameters``, ``pathParameters``, ``body``) are left out
    when empty; a body is base64-encoded unless it is UTF-8 text of a text media type.
    With a named ``stage``, ``path`` must include its ``/<stage>`` prefix: API Gateway
    passes it on in ``rawPath``.
    """
    moment = now or datetime.now(UTC)
    method = method.upper()

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    # The headers API Gateway adds on its way to the function.
    forwarded_for = merged.get("x-forwarded-for")
    merged["x-forwarded-for"] = f"{forwarded_for}, {source_ip}" if forwarded_for else source_ip
    merged["x-forwarded-proto"] = scheme
    if server_port is not None:
        merged["x-forwarded-port"] = str(server_port)
    merged.setdefault("x-amzn-trace-id", _trace_id(moment))

    decoded_path = unquote(path) or "/"
    domain_name, domain_prefix = _domain(merged.get("host"))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": decoded_path,
        "rawQueryString": query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged

    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    if query:
        event["queryStringParameters"] = query

    event["requestContext"] = {
        "accountId": LOCAL_ACCOUNT_ID,
        "apiId": LOCAL_API_ID,
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": method,
            "path": decoded_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id or str(uuid.uuid4()),
        "routeKey": route_key,
        "stage": stage,
        "time": _format_request_time(moment),
        "timeEpoch": int(moment.timestamp() * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)

    is_base64 = False
    if body:
        text: str | None = None
        if _is_text_media_type(merged.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            text, is_base64 = base64.b64encode(body).decode("ascii"), True
        event["body"] = text
    event["isBase64Encoded"] = is_base64
    return event


def scheduled_event(schedule: ScheduledFunction, *, now: datetime | None = None) -> Any:
    """What EventBridge sends for a schedule (the constant ``Input`` when one is set)."""
    if schedule.input is not None:
        return schedule.input
    moment = now or datetime.now(UTC)
    aws_region = region()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT_ID,
        "time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": aws_region,
        "resources": [
            f"arn:aws:events:{aws_region}:{LOCAL_ACCOUNT_ID}:rule/{schedule.function_name}{schedule.event_name}"
        ],
        "detail": {},
    }


# --------------------------------------------------------------------------- response


class MalformedResponse(ValueError):
    """A handler result API Gateway would reject (it answers 500 instead)."""


def to_http_response(result: Any) -> Response:
    """Translate a handler result into the HTTP response API Gateway would send.

    Payload 2.0 rules: a dict with ``statusCode`` is a full response (``headers``,
    ``multiValueHeaders``, ``cookies`` -> one ``Set-Cookie`` each, ``body``,
    ``isBase64Encoded``); anything else is the JSON body of a 200.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        return Response(json.dumps(result), status_code=200, media_type="application/json")

    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an HTTP status code, got {status!r}")

    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise MalformedResponse(f"body must be a string, got {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedResponse(f"isBase64Encoded is true but body is not base64: {exc}") from exc
    else:
        payload = body.encode("utf-8")

    response = Response(payload, status_code=status)
    response.raw_headers.extend(_response_headers(result))
    return response


def _response_headers(result: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    raw_headers: list[tuple[bytes, bytes]] = []

    def add(name: Any, value: Any) -> None:
        if not isinstance(name, str) or isinstance(value, (dict, list)):
            raise MalformedResponse(f"bad header {name!r}: {value!r}")
        if name.lower() in _HOP_BY_HOP:
            return
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        raw_headers.append((name.lower().encode("latin-1"), text.encode("latin-1")))

    headers = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    cookies = result.get("cookies") or []
    if not isinstance(headers, dict) or not isinstance(multi, dict) or not isinstance(cookies, list):
        raise MalformedResponse("headers/multiValueHeaders must be objects and cookies a list")
    for name, value in headers.items():
        add(name, value)
    # Not part of payload 2.0, but Mangum's 1.0-style results carry it; serving it
    # beats silently dropping headers.
    for name, values in multi.items():
        for value in values if isinstance(values, list) else [values]:
            add(name, value)
    for cookie in cookies:
        add("set-cookie", cookie)
    return raw_headers
