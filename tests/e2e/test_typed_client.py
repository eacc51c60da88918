"""The typed Python client, generated from the checked-in openapi.json by
openapi-python-client (`make client`, here into a temporary folder: it is never
committed, so it cannot drift), books an appointment through the local gateway.

Operations are looked up by method and path, and request bodies built from the model
each operation declares, so the test follows openapi.json as it is at test time (not a
list of generated names of its own).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import unique_email
from tests.e2e import test_docs_browser
from tests.infra.helpers import run
from tests.support import REPO

PACKAGE = "reservations_client"


class Operations:
    """The generated package's operation modules, by (method, path) as in openapi.json."""

    def __init__(self, package: types.ModuleType) -> None:
        self.package = package
        self.modules: dict[tuple[str, str], types.ModuleType] = {}
        root = Path(next(iter(package.__path__)))
        pattern = re.compile(r'"method": "(\w+)",\s*"url": "([^"]+)"')
        for source in sorted((root / "api").glob("*/*.py")):
            found = pattern.search(source.read_text(encoding="utf-8"))
            if found:
                name = ".".join(source.relative_to(root).with_suffix("").parts)
                self.modules[(found[1], found[2])] = importlib.import_module(f"{PACKAGE}.{name}")

    def __call__(self, method: str, path: str) -> types.ModuleType:
        assert (method, path) in self.modules, f"no generated operation for {method.upper()} {path}"
        return self.modules[(method, path)]

    def body(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        """The operation's declared body model, built from a JSON-shaped payload."""
        hints = typing.get_type_hints(self(method, path).sync_detailed)
        model = hints["body"]
        return model.from_dict(payload)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operations]:
    folder = tmp_path_factory.mktemp("client")
    result = run(["make", "--no-print-directory", "client", f"CLIENT_DIR={folder}"], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / PACKAGE / "client.py").is_file()
    sys.path.insert(0, str(folder))
    try:
        yield Operations(importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


# The local gateway on a free port: test_docs_browser's fixture itself, not a copy of it.
gateway_url = test_docs_browser.gateway_url


def test_every_documented_operation_is_generated(generated: Operations) -> None:
    document = json.loads((REPO / "openapi.json").read_text())
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert set(generated.modules) == documented


def test_books_an_appointment_through_the_typed_client(generated: Operations, gateway_url: str) -> None:
    base_url = gateway_url
    client_module = importlib.import_module(f"{PACKAGE}.client")
    anonymous = client_module.Client(base_url=base_url, raise_on_unexpected_status=True, timeout=30)

    def signed_in(role: str, **extra: str) -> tuple[Any, Any]:
        password = "typed-client-42"
        payload = {"name": f"Typed {role}", "email": unique_email(), "password": password, "role": role, **extra}
        register = generated("post", "/register")
        created = register.sync_detailed(client=anonymous, body=generated.body("post", "/register", payload))
        assert created.status_code == 201, created.content
        form = {"username": payload["email"], "password": password}
        token = generated("post", "/token").sync(client=anonymous, body=generated.body("post", "/token", form))
        assert token.token_type == "bearer"
        client = client_module.AuthenticatedClient(
            base_url=base_url, token=token.access_token, raise_on_unexpected_status=True, timeout=30
        )
        return created.parsed, client

    provider, provider_client = signed_in("provider", timezone="UTC")
    _, patient_client = signed_in("patient")
    assert provider.role == "provider"

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    schedule = {
        "general_schedule": {
            "start_date": day.isoformat(),
            "end_date": day.isoformat(),
            "times": [{"days": "M-Su", "start": "9am", "end": "10am"}],
        }
    }
    availability = "/providers/{provider_id}/availability"
    posted = generated("post", availability).sync(
        provider.id, client=provider_client, body=generated.body("post", availability, schedule)
    )
    assert posted.slots == 4

    slots = generated("get", "/providers/{provider_id}/time-slots").sync(
        provider.id, client=patient_client, start_date=day, end_date=day
    )
    assert [s.start_time.strftime("%H:%M") for s in slots] == ["09:00", "09:15", "09:30", "09:45"]
    assert all(isinstance(s.start_time, datetime) for s in slots)  # typed, not strings

    chosen = slots[1]
    reserve = {"provider_id": provider.id, "start_time": chosen.start_time.isoformat()}
    held = generated("post", "/appointments/reserve").sync_detailed(
        client=patient_client,
        body=generated.body("post", "/appointments/reserve", reserve),
        idempotency_key=uuid.uuid4().hex,
    )
    assert held.status_code == 201, held.content
    assert held.parsed.start_time == chosen.start_time
    assert str(held.parsed.status) == "reserved"

    confirm = {"slot_id": held.parsed.slot_id}
    confirmed = generated("post", "/appointments/confirm").sync(
        client=patient_client, body=generated.body("post", "/appointments/confirm", confirm)
    )
    assert str(confirmed.status) == "confirmed"
    assert confirmed.slot_id == held.parsed.slot_id
    after = generated("get", "/providers/{provider_id}/time-slots").sync(
        provider.id, client=patient_client, start_date=day, end_date=day
    )
    assert chosen.start_time not in [s.start_time for s in after]
