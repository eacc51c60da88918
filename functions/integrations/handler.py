"""integrations function: webhook endpoints and their deliveries, calendar feeds."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request, Response, status

from reservations.composition import Container
from reservations.http.app import create_app
from reservations.http.deps import Caller
from reservations.http.integration_schemas import (
    CalendarFeedOut,
    DeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookWithSecretOut,
)
from reservations.http.lambda_entry import make_lambda_handler
from reservations.http.schemas import MAX_ID
from reservations.usecases.integrations import CreatedWebhook, delivery_view

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations integrations", container)
integrations = container.integrations

WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
FeedToken = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


def _with_secret(created: CreatedWebhook) -> WebhookWithSecretOut:
    return WebhookWithSecretOut(**WebhookOut.of(created.webhook).model_dump(), secret=created.secret)


@app.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookWithSecretOut)
async def create_webhook(body: WebhookIn, caller: Caller) -> WebhookWithSecretOut:
    created = integrations.create_webhook(caller, url=body.url, events=body.events, description=body.description)
    return _with_secret(created)


@app.get("/webhooks", response_model=list[WebhookOut])
async def list_webhooks(caller: Caller) -> list[WebhookOut]:
    return [WebhookOut.of(webhook) for webhook in integrations.list_webhooks(caller)]


@app.get("/webhooks/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: WebhookId, caller: Caller) -> WebhookOut:
    return WebhookOut.of(integrations.get_webhook(caller, webhook_id))


@app.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_webhook(webhook_id: WebhookId, caller: Caller) -> Response:
    integrations.delete_webhook(caller, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.post("/webhooks/{webhook_id}/rotate-secret", response_model=WebhookWithSecretOut)
async def rotate_secret(webhook_id: WebhookId, caller: Caller) -> WebhookWithSecretOut:
    return _with_secret(integrations.rotate_secret(caller, webhook_id))


@app.post("/webhooks/{webhook_id}/ping", response_model=DeliveryOut)
async def ping(webhook_id: WebhookId, caller: Caller) -> DeliveryOut:
    return DeliveryOut(**delivery_view(integrations.ping(caller, webhook_id)))


@app.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def deliveries(
    webhook_id: WebhookId,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[DeliveryOut]:
    found = integrations.deliveries(caller, webhook_id, limit=limit, offset=offset)
    return [DeliveryOut(**delivery_view(delivery)) for delivery in found]


@app.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(webhook_id: WebhookId, delivery_id: DeliveryId, caller: Caller) -> DeliveryOut:
    return DeliveryOut(**delivery_view(integrations.retry_delivery(caller, webhook_id, delivery_id)))


@app.post("/me/calendar-feed", status_code=status.HTTP_201_CREATED, response_model=CalendarFeedOut)
async def new_calendar_feed(caller: Caller, request: Request) -> CalendarFeedOut:
    token = integrations.new_calendar_feed(caller)
    return CalendarFeedOut(url=str(request.url_for("calendar_feed", token=token)))


@app.get(
    "/calendar/{token}",
    name="calendar_feed",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}}}},
)
async def calendar_feed(token: FeedToken) -> Response:
    return Response(content=integrations.calendar(token), media_type="text/calendar; charset=utf-8")


handler = make_lambda_handler(app, container.settings)
