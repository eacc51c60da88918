"""What each operation can answer besides success, for the OpenAPI document.

`ERRORS` maps every operation to the 4xx statuses it can answer and, per status, the
`code` values of the error body; the document declares exactly those (the code as an
enum), so a client or a generator knows `400 invalid_reset_token` is an expected answer of
`POST /password-reset/confirm` and not of `GET /me`. The codes come from the domain
(`code="..."` in domain/ and usecases/) and the HTTP layer (app.py, deps.py).

Applied when an app builds its document (`install`), after every route is defined. An
operation missing from the table is documented with the generic envelope (any code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

# Every signed-in operation: a missing, invalid, expired or revoked token.
TOKEN = ("not_authenticated", "invalid_token", "token_expired", "token_revoked")
# A present but bad token on an operation that also serves the signed-out.
OPTIONAL_TOKEN = ("invalid_token", "token_expired", "token_revoked")
# A value the database refuses (a NUL byte, an out-of-range number): any operation.
STORE = ("invalid_value",)
IDEMPOTENCY = ("idempotency_key_reused",)
DATES = ("invalid_date_range",)
LIMITED = ("rate_limited",)
WEBHOOK = {401: TOKEN, 403: ("wrong_role",), 404: ("webhook_not_found",)}

ERRORS: dict[str, dict[int, tuple[str, ...]]] = {
    # --- auth ---------------------------------------------------------------------------
    "POST /register": {
        401: OPTIONAL_TOKEN,
        403: ("admin_required",),
        409: ("email_taken", "admin_exists"),
        422: ("invalid_password", "invalid_timezone"),
        429: LIMITED,
    },
    "POST /token": {401: ("invalid_credentials",), 429: ("login_locked", "rate_limited")},
    "POST /token/refresh": {401: ("invalid_refresh_token", "refresh_token_reused")},
    "POST /reset-password": {
        400: ("missing_field", "wrong_password"),
        401: TOKEN,
        403: ("admin_required",),
        404: ("user_not_found",),
        422: ("invalid_password",),
        429: ("login_locked", "rate_limited"),
    },
    "POST /password-reset/request": {429: LIMITED},
    "POST /password-reset/confirm": {400: ("invalid_reset_token",), 422: ("invalid_password",), 429: LIMITED},
    "POST /logout": {},
    "POST /logout-all": {401: TOKEN},
    "POST /email-verification/request": {401: TOKEN, 429: LIMITED},
    "POST /email-verification/confirm": {400: ("invalid_verification_token",), 429: LIMITED},
    "GET /me": {401: TOKEN},
    "PATCH /me": {401: TOKEN, 422: ("invalid_timezone",)},
    "GET /audit": {401: TOKEN, 403: ("admin_required",), 422: ("invalid_cursor", "invalid_date_range")},
    "GET /me/activity": {401: TOKEN, 422: ("invalid_cursor",)},
    "GET /me/export": {401: TOKEN},
    "GET /users/{user_id}/export": {401: TOKEN, 404: ("user_not_found",)},
    "DELETE /me": {
        401: TOKEN,
        403: ("wrong_password",),
        409: ("last_admin", "has_future_appointments"),
        429: ("login_locked", "rate_limited"),
    },
    "DELETE /users/{user_id}": {401: TOKEN, 404: ("user_not_found",), 409: ("last_admin", "has_future_appointments")},
    # --- providers ----------------------------------------------------------------------
    "GET /providers": {401: TOKEN, 403: ("wrong_role",)},
    "POST /providers/{provider_id}/availability": {
        401: TOKEN,
        403: ("wrong_role", "not_your_schedule"),
        404: ("provider_not_found",),
    },
    "GET /providers/{provider_id}/availability": {
        401: TOKEN,
        403: ("wrong_role", "not_your_schedule"),
        404: ("provider_not_found",),
    },
    "GET /providers/{provider_id}/time-slots": {
        401: TOKEN,
        404: ("provider_not_found", "visit_type_not_found"),
        422: DATES,
    },
    "GET /providers/{provider_id}/next-available": {
        401: TOKEN,
        404: ("provider_not_found", "visit_type_not_found", "no_availability"),
    },
    "GET /availability": {401: TOKEN, 422: ("invalid_search", *DATES)},
    "GET /providers/{provider_id}": {401: TOKEN, 404: ("provider_not_found",)},
    "PATCH /providers/{provider_id}": {
        401: TOKEN,
        403: ("not_your_schedule",),
        404: ("provider_not_found",),
        422: ("invalid_timezone",),
    },
    "POST /providers/{provider_id}/visit-types": {
        401: TOKEN,
        403: ("not_your_schedule",),
        404: ("provider_not_found",),
        409: ("visit_type_exists",),
    },
    "GET /providers/{provider_id}/visit-types": {401: TOKEN, 404: ("provider_not_found",)},
    "PATCH /visit-types/{visit_type_id}": {
        401: TOKEN,
        403: ("not_your_schedule",),
        404: ("visit_type_not_found",),
        409: ("default_visit_type_fixed", "visit_type_exists"),
    },
    "DELETE /visit-types/{visit_type_id}": {
        401: TOKEN,
        403: ("not_your_schedule",),
        404: ("visit_type_not_found",),
        409: ("default_visit_type",),
    },
    "GET /directory/providers": {401: TOKEN, 422: ("invalid_cursor",)},
    "GET /providers/{provider_id}/booked-appointments": {
        401: TOKEN,
        403: ("wrong_role", "not_your_schedule"),
        404: ("provider_not_found",),
        422: DATES,
    },
    "GET /providers/{provider_id}/stats": {
        401: TOKEN,
        403: ("wrong_role", "not_your_schedule"),
        404: ("provider_not_found",),
        422: DATES,
    },
    # --- appointments -------------------------------------------------------------------
    "POST /appointments/reserve": {
        400: ("too_soon", "too_far"),
        401: TOKEN,
        403: ("wrong_role", "email_not_verified"),
        404: ("provider_not_found", "visit_type_not_found"),
        409: (
            "daily_limit_reached",
            "slot_unavailable",
            "too_many_holds",
            "overlapping_appointment",
            "too_many_appointments",
        ),
        422: ("off_grid", "invalid_start_time", *IDEMPOTENCY),
    },
    "POST /appointments/confirm": {
        401: TOKEN,
        403: ("wrong_role",),
        404: ("appointment_not_found",),
        409: ("reservation_expired", "appointment_cancelled", "not_confirmable", "change_window_closed"),
        422: IDEMPOTENCY,
    },
    "POST /appointments/cancel": {
        401: TOKEN,
        403: ("wrong_role",),
        404: ("appointment_not_found",),
        409: ("reservation_expired", "not_cancellable", "appointment_in_past", "change_window_closed"),
        422: IDEMPOTENCY,
    },
    "POST /appointments/reschedule": {
        400: ("too_soon", "too_far"),
        401: TOKEN,
        403: ("wrong_role",),
        404: ("appointment_not_found", "provider_not_found", "visit_type_not_found"),
        409: (
            "not_reschedulable",
            "appointment_in_past",
            "change_window_closed",
            "daily_limit_reached",
            "slot_unavailable",
            "too_many_holds",
            "overlapping_appointment",
            "too_many_appointments",
        ),
        422: ("off_grid", "invalid_start_time", *IDEMPOTENCY),
    },
    "POST /appointments/{appointment_id}/attendance": {
        401: TOKEN,
        403: ("wrong_role",),
        404: ("appointment_not_found",),
        409: ("attendance_not_allowed",),
    },
    "GET /appointments/{appointment_id}/history": {
        401: TOKEN,
        403: ("wrong_role",),
        404: ("appointment_not_found",),
    },
    "GET /appointments": {401: TOKEN, 403: ("wrong_role", "admin_required"), 422: DATES},
    "GET /appointments/{appointment_id}": {401: TOKEN, 403: ("wrong_role",), 404: ("appointment_not_found",)},
    # --- integrations -------------------------------------------------------------------
    "POST /webhooks": {
        401: TOKEN,
        403: ("wrong_role",),
        409: ("too_many_webhooks",),
        422: ("invalid_webhook_url", "invalid_events"),
    },
    "GET /webhooks": {401: TOKEN, 403: ("wrong_role",)},
    "GET /webhooks/{webhook_id}": WEBHOOK,
    "DELETE /webhooks/{webhook_id}": WEBHOOK,
    "POST /webhooks/{webhook_id}/rotate-secret": WEBHOOK,
    "POST /webhooks/{webhook_id}/ping": {**WEBHOOK, 409: ("webhook_disabled",)},
    "GET /webhooks/{webhook_id}/deliveries": WEBHOOK,
    "POST /webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {
        401: TOKEN,
        403: ("wrong_role",),
        404: ("webhook_not_found", "delivery_not_found"),
        409: ("webhook_disabled", "delivery_succeeded"),
    },
    "POST /me/calendar-feed": {401: TOKEN},
    "GET /calendar/{token}": {404: ("calendar_not_found",)},
}

DESCRIPTIONS = {
    400: "Rejected by a business rule",
    401: "Missing, invalid, expired or revoked credentials (see WWW-Authenticate)",
    403: "Wrong role or not yours",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Body over 64 KiB",
    422: "Invalid request: FastAPI's list of schema errors (no code), or a rule beyond the schema",
    429: "Too many attempts (see Retry-After)",
    503: "Database unavailable (see Retry-After)",
}
# Every operation touches the database.
ALWAYS = {503: ("database_unavailable",)}
# A body that cannot be read (not UTF-8, not the declared form) is 400; the local gateway
# and API Gateway refuse big bodies before the function runs.
WITH_BODY = {400: ("bad_request",), 413: ("payload_too_large",)}
GENERIC = {status: () for status in (400, 401, 403, 404, 409, 422, 429)}

_HEADER = {"schema": {"type": "string"}}
HEADERS = {
    401: {"WWW-Authenticate": {**_HEADER, "description": "Bearer"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


def _code_schema(codes: Iterable[str]) -> dict[str, Any]:
    listed = sorted(set(codes))
    return {"type": "string", "enum": listed} if listed else {"type": "string"}


def _body(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    if status == 422:
        return {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "detail": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/components/schemas/ValidationIssue"}},
                        {"type": "string"},
                    ]
                },
                "code": _code_schema((*codes, *STORE)),
            },
        }
    return {
        "type": "object",
        "required": ["detail", "code"],
        "properties": {"detail": {"type": "string"}, "code": _code_schema(codes)},
    }


def _description(status: int, codes: tuple[str, ...]) -> str:
    listed = sorted(set((*codes, *STORE) if status == 422 else codes))
    text = DESCRIPTIONS.get(status, "Error")
    return f"{text}: " + ", ".join(f"`{code}`" for code in listed) if listed else text


def responses_for(key: str, *, has_body: bool) -> dict[int | str, dict[str, Any]]:
    """The error responses of one operation ("METHOD /path")."""
    table: Mapping[int, tuple[str, ...]] = ERRORS.get(key, GENERIC)
    statuses: dict[int, tuple[str, ...]] = {**table, 422: table.get(422, ()), **ALWAYS}
    if has_body:
        for status, extra_codes in WITH_BODY.items():
            statuses[status] = (*statuses.get(status, ()), *extra_codes)
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses):
        codes = statuses[status]
        response: dict[str, Any] = {
            "description": _description(status, codes),
            "content": {"application/json": {"schema": _body(status, codes)}},
        }
        if status in HEADERS:
            response["headers"] = HEADERS[status]
        documented[status] = response
    return documented


def _exact_numbers(node: Any) -> Any:
    """FastAPI's OpenAPI model keeps bounds as floats (480.0, 9.22e18); give integral ones
    back as integers, so a validator compares ids exactly and `integer` bounds read as such."""
    if isinstance(node, dict):
        return {key: _exact_numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_exact_numbers(value) for value in node]
    if isinstance(node, float) and node.is_integer():
        return int(node)
    return node


def install(app: FastAPI, extra: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Build the app's document with each operation's own errors (see ERRORS)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from .schemas import ValidationIssue

            for route in app.routes:
                if not isinstance(route, APIRoute):
                    continue
                for method in route.methods or ():
                    key = f"{method} {route.path}"
                    has_body = route.body_field is not None
                    route.responses = {**responses_for(key, has_body=has_body), **route.responses}
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ValidationIssue", ValidationIssue.model_json_schema())
            app.openapi_schema = _exact_numbers(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
