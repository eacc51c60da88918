"""Helpers of the infrastructure tier: paths, the SAM build, running built functions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
DATA_STACK = REPO / "infra" / "data-stack.yaml"
SAM_VENV = REPO / ".tools" / "sam"
DRIVER = Path(__file__).resolve().parent / "lambda_driver.py"
BUILD_TIMEOUT_SECONDS = 900
# What the python3.12 Lambda runtime ships in /var/runtime (the layer leaves them out).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
ELF_MACHINES = {62: "x86_64", 183: "arm64"}


def host_architecture() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


def other_architecture() -> str:
    return "x86_64" if host_architecture() == "arm64" else "arm64"


def python312() -> str:
    found = subprocess.run(
        ["sh", str(REPO / "scripts" / "find-python312.sh")], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"Python 3.12 (the Lambda runtime) is needed: {found.stderr.strip()}")
    return found.stdout.strip()


def elf_architecture(path: Path) -> str | None:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return None
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "unknown")


def run(
    command: list[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=REPO,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Build:
    architecture: str
    build_dir: Path
    seconds: float
    output: str
    resources: list[str] = field(default_factory=list)

    @property
    def template(self) -> Path:
        return self.build_dir / "template.yaml"

    @property
    def layer_site(self) -> Path:
        return self.build_dir / "SharedLayer" / "python"

    def function_dir(self, logical_id: str) -> Path:
        return self.build_dir / logical_id


@dataclass
class Invocation:
    init_seconds: float
    results: list[dict[str, Any]]
    foreign_modules: list[str]
    output: str

    def ok(self, index: int = 0) -> Any:
        result = self.results[index]
        assert "ok" in result, f"{result.get('error')}\n{result.get('traceback', '')}\n{self.output[-3000:]}"
        return result["ok"]


def invoke_built(
    build: Build,
    logical_id: str,
    events: list[Any],
    *,
    python: str,
    runtime_dir: Path,
    environment: Mapping[str, str],
    handler: str = "handler.handler",
    timeout: float = 120,
) -> Invocation:
    """Cold-start the built function in a fresh interpreter and hand it the events."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(build.build_dir),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONPATH": os.pathsep.join([str(build.function_dir(logical_id)), str(build.layer_site), str(runtime_dir)]),
        # /var/task and /opt are read-only on Lambda: nothing gets cached next to the code.
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(build.function_dir(logical_id)),
        "AWS_LAMBDA_FUNCTION_NAME": logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **environment,
    }
    request = {"handler": handler, "function_name": logical_id, "timeout": timeout, "events": events}
    result = subprocess.run(
        [python, "-S", "-P", str(DRIVER)],
        input=json.dumps(request),
        cwd=build.function_dir(logical_id),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, f"{logical_id} did not run (exit {result.returncode}):\n{output[-6000:]}"
    outcome = json.loads(lines[-1][len("RESULT ") :])
    return Invocation(outcome["init_seconds"], outcome["results"], outcome["foreign_modules"], output)


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO / "events" / name).read_text())
    return event


def sam_python(sam_cli: Path, script: str, *arguments: str) -> dict[str, Any]:
    """Run ``script`` with the SAM CLI's own Python (its translator installed) and read the
    JSON document it prints."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    result = subprocess.run(
        [str(sam_cli.parent / "python"), "-c", script, *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    document: dict[str, Any] = json.loads(result.stdout)
    return document
