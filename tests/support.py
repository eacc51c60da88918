"""Test helpers: the Lambda harness's conveniences (reservations_dev.harness), with
``load_function`` loading a fresh "container" on every call."""

from __future__ import annotations

from types import ModuleType

from reservations_dev import harness
from reservations_dev.harness import REPO, FunctionClient, LambdaContext, Response, http_event

__all__ = ["REPO", "FunctionClient", "LambdaContext", "Response", "http_event", "load_function"]


def load_function(name: str) -> ModuleType:
    """functions/<name>/handler.py as a new module: one call = one cold container."""
    return harness.load_function(name, fresh=True)
