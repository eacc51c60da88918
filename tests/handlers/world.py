"""Several function containers sharing one controllable clock, as deployed Lambdas
share a database: the fixture of the handler tests that cross functions."""

from __future__ import annotations

import uuid

from tests.conftest import Clock, unique_email
from tests.support import FunctionClient, load_function


class World:
    """Three function containers sharing one controllable clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.auth = FunctionClient(load_function("auth"))
        self.providers = FunctionClient(load_function("providers"))
        self.appointments = FunctionClient(load_function("appointments"))
        for client in (self.auth, self.providers, self.appointments):
            client.module.app.state.runtime.clock = clock

    def user(self, role: str, timezone: str = "UTC") -> dict:
        body = {
            "name": f"{role}-{uuid.uuid4().hex[:4]}",
            "email": unique_email(role),
            "password": "password1",
            "role": role,
            "timezone": timezone,
        }
        created = self.auth.post("/register", json_body=body)
        assert created.status == 201, created.body
        token = self.auth.post("/token", form={"username": body["email"], "password": "password1"}).body
        return {**created.body, "token": token["access_token"]}

    def settings(self, **changes: object) -> None:
        for client in (self.providers, self.appointments):
            runtime = client.module.app.state.runtime
            runtime.settings = runtime.settings.model_copy(update=changes)
