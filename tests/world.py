"""The one World: the deployed functions as separately loaded containers (as Lambda runs
them) that share one database, one Redis and one controllable clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

from sqlalchemy import select

from reservations.adapters.db import Appointment
from reservations.adapters.slot_cache import SlotCache
from reservations.composition import Container
from reservations.config import Settings
from reservations.usecases.housekeeping import SyncSummary, run_sync_pass
from tests.builders import (
    NOW,
    SLOT,
    Clock,
    Person,
    Transaction,
    create_admin,
    create_user,
    hold,
    http_login,
    http_register,
    open_weekdays,
)
from tests.redis_server import RedisServer
from tests.support import FunctionClient, load_function

SEVEN_DAYS = {"start_date": "2027-01-06", "end_date": "2027-01-12"}


def container_of(client: FunctionClient) -> Container:
    container: Container = client.module.container
    return container


def follow(function_container: Container, setup: Container, **changes: Any) -> Container:
    """Point a function's container at the setup container's settings (plus `changes`) and clock."""
    function_container.configure(**{**setup.settings.model_dump(), **changes})
    function_container.clock = setup.clock
    return function_container


class World:
    """auth, providers (two containers: `providers` and `providers_b`, one Redis) and
    appointments, all on one clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.auth = FunctionClient(load_function("auth"))
        self.providers = FunctionClient(load_function("providers"))
        self.providers_b = FunctionClient(load_function("providers"))
        self.appointments = FunctionClient(load_function("appointments"))
        for client in self.clients:
            container_of(client).clock = clock

    @property
    def clients(self) -> list[FunctionClient]:
        return [self.auth, self.providers, self.providers_b, self.appointments]

    def user(self, role: str, timezone: str = "UTC") -> dict[str, Any]:
        """A user registered and signed in over HTTP: the profile plus "token" and "password"."""
        created = http_register(self.auth, role, timezone=timezone)
        return {**created, "token": http_login(self.auth, created)["access_token"]}

    def admin(self) -> dict[str, Any]:
        """An admin made through the auth container's use cases (on the world's clock)."""
        admin = create_admin(container_of(self.auth))
        return {"id": admin.id, "email": admin.email, "role": "admin", "token": admin.token}

    def settings(self, **changes: object) -> None:
        for client in self.clients:
            container_of(client).configure(**changes)

    def slots(
        self, provider: dict[str, Any], patient: dict[str, Any], query: dict[str, str] = SEVEN_DAYS, *, via: Any = None
    ) -> Any:
        client = via or self.providers
        return client.get(f"/providers/{provider['id']}/time-slots", token=patient["token"], query=query)

    def post_availability(self, provider: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        response = self.providers.post(
            f"/providers/{provider['id']}/availability", json_body=body, token=provider["token"]
        )
        assert response.status == 200, response.body
        result: dict[str, Any] = response.body
        return result

    def appointment(self, action: str, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        response = self.appointments.post(f"/appointments/{action}", json_body=body, token=user["token"])
        assert response.status in (200, 201), response.body
        result: dict[str, Any] = response.body
        return result

    def close(self) -> None:
        for client in self.clients:
            client.close()


HOLD_MINUTES = 30


@dataclass
class SyncWorld:
    """A database and a Redis of their own (the sync pass works on whole tables and the
    whole keyspace, so its counts are exact), a container on them at NOW, and function
    containers configured the same way."""

    container: Container
    clock: Clock
    redis: RedisServer
    cache: SlotCache
    loaded: list[ModuleType] = field(default_factory=list)

    @classmethod
    def on(cls, settings: Settings, *, database_url: str, redis: RedisServer) -> SyncWorld:
        clock = Clock(NOW)
        private = settings.model_copy(
            update={
                "database_url": database_url,
                "redis_url": redis.url(),
                "max_active_holds": 100,
                "confirmation_grace_period_minutes": HOLD_MINUTES,
            }
        )
        return cls(Container(private, clock=clock), clock, redis, SlotCache.from_url(redis.url(), ttl_seconds=600))

    # --- the pass, through the domain (integration tier) ---------------------------------

    def new_cache(self, url: str) -> SlotCache:
        return SlotCache.from_url(url, ttl_seconds=600)

    def sync(self, cache: SlotCache | None = None, *, transaction: Transaction | None = None) -> SyncSummary:
        return run_sync_pass(
            transaction or self.container.unit_of_work, cache, policy=self.container.booking_policy, now=self.clock()
        )

    # --- the functions, on the same database and Redis (handler tier) -------------------

    def function(self, name: str, **changes: Any) -> ModuleType:
        """functions/<name>/handler.py as a new container on this world's database, Redis and clock."""
        module = load_function(name)
        follow(module.container, self.container, **changes)
        self.loaded.append(module)
        return module

    def client(self, name: str) -> FunctionClient:
        return FunctionClient(self.function(name))

    # --- setup and checks ---------------------------------------------------------------

    def provider_with_week(self) -> Person:
        provider = create_user(self.container, "provider")
        open_weekdays(self.container, provider)
        return provider

    def holds(self, provider: Person | int, count: int, *, first_slot: int = 0) -> list[int]:
        """`count` holds on Wednesday from 09:00 on, by different patients."""
        ids = []
        for index in range(first_slot, first_slot + count):
            patient = create_user(self.container, "patient")
            ids.append(hold(self.container, patient, provider, SLOT + timedelta(minutes=15 * index)))
        return ids

    def statuses(self, ids: Sequence[int]) -> list[str]:
        with self.container.unit_of_work() as session:
            rows = dict(
                session.execute(select(Appointment.id, Appointment.status).where(Appointment.id.in_(ids))).all()
            )
        return [rows[i] for i in ids]

    def close(self) -> None:
        self.cache.client.close()
        self.container.close()
        for module in self.loaded:
            module.container.close()


# --- providers' profiles and visit types, over HTTP ------------------------------------------

WEEKDAYS_8_TO_4 = {
    "general_schedule": {
        "start_date": "2027-01-04",
        "end_date": "2027-01-31",
        "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
    }
}


def named_provider(world: World, name: str, *, specialty: str | None = None, timezone: str = "UTC") -> dict[str, Any]:
    """A provider with this name (and specialty), signed in: the profile plus "token"."""
    created = http_register(world.auth, "provider", name=name, timezone=timezone)
    provider = {**created, "token": http_login(world.auth, created)["access_token"]}
    if specialty is not None:
        patch_profile(world, provider, provider, specialty=specialty)
    return provider


def patch_profile(world: World, actor: dict[str, Any], provider: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """PATCH /providers/{id} by `actor`, which must succeed: the profile."""
    response = world.providers.patch(f"/providers/{provider['id']}", json_body=changes, token=actor["token"])
    assert response.status == 200, response.body
    result: dict[str, Any] = response.body
    return result


def add_visit_type(world: World, provider: dict[str, Any], name: str, minutes: int, **buffers: int) -> dict[str, Any]:
    """POST /providers/{id}/visit-types by the provider: the created type. `buffers` are
    buffer_before_minutes / buffer_after_minutes."""
    body = {"name": name, "duration_minutes": minutes, **buffers}
    response = world.providers.post(f"/providers/{provider['id']}/visit-types", json_body=body, token=provider["token"])
    assert response.status == 201, response.body
    result: dict[str, Any] = response.body
    return result


def lasting_user(world: World, role: str) -> dict[str, Any]:
    """A user whose token outlives clock advances of days (TOKEN_TTL), unlike a sign-in's
    30 minutes: {"id", "role", "email", "token"}."""
    person = create_user(container_of(world.auth), role)
    return {"id": person.id, "role": role, "email": person.email, "token": person.token}
