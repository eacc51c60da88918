"""Import budget of every function: what `import handler` may load at a cold start.

Each function's handler is imported in a fresh interpreter (``-S -P``: no site hooks, no
script folder) with ``PYTHONPATH=functions/<name>:shared:<site-packages>`` - the order of
/var/task, /opt/python and the runtime on Lambda - and the settings of APP_ENV=aws with
tracing off, as the cold-start bench runs them. Nothing is contacted at import. Then
``sys.modules`` is checked against the function's list of forbidden packages: what its
first request does not need (an AWS client, the X-Ray SDK, Alembic, argon2, the calendar
and webhook libraries, another function's models) is imported where it is used, and this
keeps it there. Not a timing: names, and a module count.

The ceilings are today's count plus a comfortable margin (about 12%): not a target to
shave towards, a tripwire for a new heavy import that no list names (boto3 alone is some
200 modules, icalendar some 60, FastAPI some 300).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

import pytest

from tests.infra.helpers import REPO

FUNCTIONS = REPO / "functions"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]

# Nothing makes an AWS client, opens a connection, hashes a password, renders a calendar
# or signs a webhook at import; tracing is off, so no X-Ray SDK. (botocore's bare package
# comes with Powertools' user-agent hook; what creating a client loads is forbidden.)
EVERYWHERE = (
    "boto3",
    "botocore.session",
    "botocore.client",
    "s3transfer",
    "aws_xray_sdk",
    "argon2",
    "passlib",
    "icalendar",
    "standardwebhooks",
    "urllib3",
    "limits",
    "redis",
    "pg8000",
    "alembic",
    "mako",
    "reservations.adapters.webhook_transport",
    "reservations.adapters.slot_cache",
    "reservations.domain.notifications",
    "reservations.usecases.events",
)
# The HTTP stack, for the functions that serve no HTTP.
NO_HTTP = ("fastapi", "starlette", "mangum", "anyio", "python_multipart", "email_validator")
# Another function's request and response models.
BOOKING_MODELS = ("reservations.http.booking_schemas",)
INTEGRATION_MODELS = ("reservations.http.integration_schemas",)


@dataclass(frozen=True)
class Budget:
    forbidden: tuple[str, ...]
    ceiling: int  # sys.modules after `import handler`, at most


BUDGETS = {
    "auth": Budget((*EVERYWHERE, *BOOKING_MODELS, "reservations.usecases.booking"), 870),
    "providers": Budget((*EVERYWHERE, *INTEGRATION_MODELS, "reservations.usecases.booking"), 870),
    "appointments": Budget((*EVERYWHERE, *INTEGRATION_MODELS, "reservations.usecases.schedule"), 870),
    "integrations": Budget((*EVERYWHERE, *BOOKING_MODELS, "reservations.usecases.booking"), 870),
    "docs": Budget((*EVERYWHERE, "sqlalchemy", "jwt", "reservations.composition"), 570),
    "cache_sync": Budget((*EVERYWHERE, *NO_HTTP), 665),
    "events": Budget((*EVERYWHERE, *NO_HTTP), 665),
    # Its one job is `alembic upgrade head`: Alembic (and Mako, its templates) are its own.
    "migrate": Budget(tuple(name for name in (*EVERYWHERE, *NO_HTTP) if name not in ("alembic", "mako")), 665),
}

# Settings every handler validates at import (APP_ENV=aws), as bench/cold_start.py sets them.
ENVIRONMENT = {
    "APP_ENV": "aws",
    "JWT_SECRET_KEY": "import-budget-secret-that-is-long-enough-0123456789",
    "DATABASE_URL": "postgresql+pg8000://postgres@127.0.0.1:9/unused",
    "DATABASE_TLS": "false",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "EMAIL_SENDER": "budget@example.com",
    "POWERTOOLS_SERVICE_NAME": "reservations",
    "POWERTOOLS_METRICS_NAMESPACE": "ReservationsTest",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LANG": "C.UTF-8",
}
REPORT = "import json, sys; import handler; print('MODULES ' + json.dumps(sorted(sys.modules)))"


def loaded_modules(function: str) -> list[str]:
    folder = FUNCTIONS / function
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join([str(folder), str(REPO / "shared"), SITE_PACKAGES]),
        "LAMBDA_TASK_ROOT": str(folder),
        **ENVIRONMENT,
    }
    result = subprocess.run(
        [sys.executable, "-S", "-P", "-c", REPORT],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("MODULES ")]
    assert result.returncode == 0 and lines, f"importing {function}'s handler failed:\n{result.stderr[-3000:]}"
    modules: list[str] = json.loads(lines[-1].removeprefix("MODULES "))
    return modules


def offending(modules: list[str], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Each forbidden name with the loaded modules it covers (itself and its submodules)."""
    found: dict[str, list[str]] = {}
    for name in forbidden:
        hits = [module for module in modules if module == name or module.startswith(name + ".")]
        if hits:
            found[name] = hits[:5]
    return found


def test_every_function_has_a_budget() -> None:
    functions = sorted(path.parent.name for path in FUNCTIONS.glob("*/handler.py"))
    assert functions == sorted(BUDGETS), "a function without an import budget (or a budget without a function)"


@pytest.mark.parametrize("function", sorted(BUDGETS))
def test_importing_the_handler_stays_within_its_budget(function: str) -> None:
    budget = BUDGETS[function]
    modules = loaded_modules(function)
    forbidden = offending(modules, budget.forbidden)
    assert not forbidden, (
        f"{function}: `import handler` loads what its first request does not need - import it where it is used: "
        f"{forbidden}"
    )
    assert len(modules) <= budget.ceiling, (
        f"{function}: `import handler` loads {len(modules)} modules, over its ceiling of {budget.ceiling}: "
        "a new heavy import? (python -X importtime shows which)"
    )
