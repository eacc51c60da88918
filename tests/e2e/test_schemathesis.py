"""Schemathesis against the merged OpenAPI document, over HTTP through the local gateway,
as a signed-out client and as a patient, a provider and an admin, with every check but
`unsupported_method` (schemathesis.toml says why, and lists the few other exceptions):
no 5xx; every answer's status, content type, headers and body match the document; data
the document allows is accepted and data it rules out is refused. First Hypothesis-driven
cases per operation, then the CLI's own phases (examples, coverage, fuzzing) per role,
then a stateful run that chains operations through OpenAPI links (register -> token,
reserve -> confirm -> cancel, provider -> slots)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.checks import load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from reservations.composition import Container
from reservations.config import Settings
from reservations_dev.harness import clear_handler_cache
from reservations_dev.server import create_app, run_in_thread
from tests.builders import PASSWORD, create_admin, http_login, http_register
from tests.support import REPO

CONFIG = REPO / "schemathesis.toml"  # the exceptions, each with its reason
ROLES = ("nobody", "patient", "provider", "admin")
# register -> token and slots; reserve -> confirm -> cancel -> read.
JOURNEY_PATHS = (
    r"^/(register|token|appointments/(reserve|confirm|cancel|\{appointment_id\})|providers/\{provider_id\}/time-slots)$"
)


def enabled_checks() -> list[Any]:
    """Every check Schemathesis has, less those schemathesis.toml disables."""
    load_all_checks()
    config = SchemathesisConfig.from_path(CONFIG).projects.get_default().checks_config_for()
    checks = [check for check in CHECK_REGISTRY.get_all() if callable(check) and hasattr(check, "__name__")]
    return [check for check in checks if config.get_by_name(name=check.__name__).enabled]


CHECKS = enabled_checks()


def merged_document() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("openapi_script", REPO / "scripts" / "openapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document: dict[str, Any] = module.merged_document()
    return document


@dataclass
class Live:
    base_url: str
    tokens: dict[str, str]
    provider_id: int

    def headers(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}


def open_provider(client: httpx.Client, provider_id: int, token: str) -> None:
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    posted = client.post(
        f"/providers/{provider_id}/availability",
        json={
            "general_schedule": {
                "start_date": day,
                "end_date": day,
                "times": [{"days": "M-Su", "start": "9am", "end": "5pm"}],
            }
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert posted.status_code == 200, posted.text


def fresh_tokens(live: Live, container: Container) -> dict[str, str]:
    with httpx.Client(base_url=live.base_url) as client:
        tokens = {
            role: http_login(client, http_register(client, role))["access_token"] for role in ("patient", "provider")
        }
        admin = create_admin(container)
        tokens["admin"] = http_login(client, {"email": admin.email, "password": PASSWORD})["access_token"]
    return tokens


def fresh_provider(live: Live) -> int:
    """A provider of the stateful run's own, open three days from now: the fuzzing before
    it may have changed the live provider's hours, rules and visit types at will."""
    with httpx.Client(base_url=live.base_url) as client:
        created = http_register(client, "provider")
        open_provider(client, created["id"], http_login(client, created)["access_token"])
    return int(created["id"])


@pytest.fixture(scope="module")
def live(database_url: str, module_container: Container) -> Iterator[Live]:
    clear_handler_cache()
    with run_in_thread(create_app(REPO / "template.yaml")) as base_url, httpx.Client(base_url=base_url) as client:
        tokens: dict[str, str] = {}
        ids: dict[str, int] = {}
        for role in ("patient", "provider"):
            created = http_register(client, role)
            ids[role] = created["id"]
            tokens[role] = http_login(client, created)["access_token"]
        admin = create_admin(module_container)
        tokens["admin"] = http_login(client, {"email": admin.email, "password": PASSWORD})["access_token"]
        open_provider(client, ids["provider"], tokens["provider"])
        yield Live(base_url, tokens, ids["provider"])
    clear_handler_cache()


@pytest.fixture(scope="module")
def module_container(settings: Settings) -> Iterator[Container]:
    container = Container(settings)
    yield container
    container.close()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> schemathesis.BaseSchema:
    document = merged_document()
    add_links(document)
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_path(CONFIG))
    schema.config.update(base_url=live.base_url)
    return schema


def add_links(document: dict[str, Any]) -> None:
    """OpenAPI links for the booking journey, so the stateful run chains real ids."""

    def link(path: str, method: str, status: str, name: str, target: dict[str, Any]) -> None:
        response = document["paths"][path][method]["responses"].setdefault(status, {"description": "ok"})
        response.setdefault("links", {})[name] = target

    def operation_id(path: str, method: str) -> str:
        return str(document["paths"][path][method]["operationId"])

    slot = {"requestBody": {"slot_id": "$response.body#/slot_id"}}
    link(
        "/appointments/reserve",
        "post",
        "201",
        "Confirm",
        {"operationId": operation_id("/appointments/confirm", "post"), **slot},
    )
    link(
        "/appointments/reserve",
        "post",
        "201",
        "Cancel",
        {"operationId": operation_id("/appointments/cancel", "post"), **slot},
    )
    link(
        "/appointments/confirm",
        "post",
        "200",
        "CancelConfirmed",
        {"operationId": operation_id("/appointments/cancel", "post"), **slot},
    )
    link(
        "/appointments/reserve",
        "post",
        "201",
        "Read",
        {
            "operationId": operation_id("/appointments/{appointment_id}", "get"),
            "parameters": {"appointment_id": "$response.body#/id"},
        },
    )
    link(
        "/register",
        "post",
        "201",
        "Slots",
        {
            "operationId": operation_id("/providers/{provider_id}/time-slots", "get"),
            "parameters": {"provider_id": "$response.body#/id"},
        },
    )


def test_every_operation_for_every_role(api_schema: schemathesis.BaseSchema, live: Live) -> None:
    # Driven through Hypothesis directly: schemathesis' pytest plugin predates pytest 9.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 16
    names = {check.__name__ for check in CHECKS}
    assert {"positive_data_acceptance", "negative_data_rejection", "ignored_auth"} <= names
    assert "unsupported_method" not in names

    for operation in operations:
        # Valid and invalid data: the document's promises hold both ways.
        cases = st.one_of(operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            for role in ROLES:
                case.call_and_validate(headers=live.headers(role), checks=CHECKS, timeout=30)

        fuzz()


def seeded_document(live: Live, role: str) -> dict[str, Any]:
    """The document for the stateful run, narrowed to what exists: reserve asks for a
    fresh provider and the starts it offers, and registration for valid new accounts (an
    e-mail pattern of the role's own, so no run finds its addresses taken by another), so
    journeys open links whatever the machine's speed and whatever ran before. Random
    inputs are the stateless test's job."""
    document = merged_document()
    add_links(document)
    provider_id = fresh_provider(live)
    with httpx.Client(base_url=live.base_url) as client:
        offered = client.get(f"/providers/{provider_id}/time-slots", headers=live.headers("patient"))
    assert offered.status_code == 200, offered.text
    starts = [slot["start_time"] for slot in offered.json()]
    assert starts, "the live provider offers no slot to seed the journeys with"
    reserve = document["components"]["schemas"]["ReserveIn"]["properties"]
    reserve["provider_id"] = {"type": "integer", "enum": [provider_id]}
    reserve["start_time"] = {"type": "string", "format": "date-time", "enum": starts}
    for optional in ("visit_type_id", "note"):  # a random visit type id is never the provider's
        reserve.pop(optional, None)
    register = document["components"]["schemas"]["RegisterRequest"]["properties"]
    register["name"] = {"type": "string", "pattern": "^[A-Z][a-z]{2,12}$"}
    # A prefix of this run's own: no earlier run or test can have taken these addresses.
    register["email"] = {"type": "string", "pattern": f"^{role}{uuid.uuid4().hex[:8]}[a-z0-9]{{6}}@example[.]com$"}
    register["password"] = {"type": "string", "pattern": "^[a-z0-9]{8,20}$"}
    register["role"] = {"type": "string", "enum": ["patient", "provider"]}
    register["timezone"] = {"type": "string", "enum": ["UTC", "Europe/London", "America/New_York"]}
    return document


def run_cli(schema_file: Path, live: Live, role: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`schemathesis run` with the checked-in config and the same checks as above; seeded
    and deterministic, and bounded by example counts, never by time, so a slow machine
    covers the same cases as a fast one."""
    headers = ["-H", f"Authorization: Bearer {live.tokens[role]}"] if role in live.tokens else []
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            f"--config-file={CONFIG}",
            "run",
            str(schema_file),
            f"--url={live.base_url}",
            f"--checks={','.join(check.__name__ for check in CHECKS)}",
            "--request-timeout=30",
            "--seed=1",
            "--generation-deterministic",
            "--no-color",
            *options,
            *headers,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_every_phase_for_every_role(role: str, live: Live, tmp_path: Path) -> None:
    # The CLI's examples, boundary-value coverage and fuzzing phases: what an independent
    # `schemathesis run` finds, the suite finds first.
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(merged_document()))
    result = run_cli(schema_file, live, role, "--phases=examples,coverage,fuzzing", "--max-examples=25")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) > 1000, result.stdout[-3000:]
    print(result.stdout[-1500:])


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_stateful_journeys(role: str, live: Live, module_container: Container, tmp_path: Path) -> None:
    # The CLI's stateful engine copes with a live API deciding which links open (Hypothesis'
    # own state machine replays cannot); it exits non-zero on any failed check. Valid data
    # only: the seeded document narrows what is generated, so "invalid" here would mean
    # "outside the seed", not outside the API's contract (the stateless runs cover that).
    # Accounts of the run's own: the fuzzing before it may have changed the shared ones.
    live = Live(live.base_url, fresh_tokens(live, module_container), live.provider_id)
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(seeded_document(live, role)))
    # Only the journeys' operations: with every operation, the links Schemathesis infers
    # outnumber ours and a 25-example run may follow none of them.
    result = run_cli(
        schema_file,
        live,
        role,
        "--phases=stateful",
        "--mode=positive",
        "--max-examples=25",
        f"--include-path-regex={JOURNEY_PATHS}",
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    covered = re.search(r"API Links:\s+(\d+) covered", result.stdout)
    assert covered and int(covered.group(1)) > 0, result.stdout[-3000:]  # journeys really chained
    print(result.stdout[-1500:])
