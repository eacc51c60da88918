"""The Powertools wrapper of every function: the tracer is real only when tracing is on."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest
from aws_lambda_powertools import Tracer

from reservations.config import load_settings
from reservations.http.lambda_entry import NoTracer, make_lambda_handler, powertools, tracing_enabled


@pytest.mark.parametrize(
    ("environment", "enabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),  # a deployed function (Tracing: Active)
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({}, False),  # outside Lambda: tests, make dev, the CLI
    ],
)
def test_tracing_follows_powertools_own_rule(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], enabled: bool
) -> None:
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert tracing_enabled() is enabled
    assert tracing_enabled() is not bool(Tracer._is_tracer_disabled())


def test_with_tracing_off_the_tracer_is_a_stand_in_that_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    _, _, tracer = powertools(load_settings())
    assert isinstance(tracer, NoTracer)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"event": event}

    assert tracer.capture_lambda_handler(capture_response=False)(handler) is handler
    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.capture_method(capture_response=False)(handler) is handler
    tracer.put_annotation("key", "value")
    tracer.put_metadata("key", {"value": 1})


def test_the_x_ray_sdk_is_not_imported_while_tracing_is_off() -> None:
    import subprocess

    code = (
        "import sys; from reservations.config import load_settings; "
        "from reservations.http.lambda_entry import powertools; powertools(load_settings()); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aws_xray_sdk', 'fastapi', 'mangum'}))"
    )
    env = {"POWERTOOLS_TRACE_DISABLED": "1", "LAMBDA_TASK_ROOT": "/var/task", "AWS_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_what_the_init_made_is_left_out_of_full_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI

    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    app = FastAPI()
    made_at_init = [app]  # a list: tracked by the cyclic collector until frozen
    assert any(tracked is made_at_init for tracked in gc.get_objects())
    make_lambda_handler(app, load_settings())
    assert not any(tracked is made_at_init for tracked in gc.get_objects())  # in the permanent generation
