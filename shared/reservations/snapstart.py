"""Lambda SnapStart runtime hooks (the HTTP API functions; template parameter SnapStart).

With SnapStart, Lambda runs a function's init code once, when a version is published,
snapshots the initialised execution environment and resumes every new environment of that
version from the snapshot. Whatever init left in memory is then shared by all of them:
open sockets and pooled connections, and the state of `random`. So:

- before the snapshot, import what a first request would otherwise import lazily (free at
  publish time, paid by a user's request after a restore) and release pooled database
  connections;
- after each restore, every live `Container` forgets its pooled database connections and
  its Redis clients, without closing them (those sockets belong to the snapshot, which
  other restored environments share; the next unit of work opens its own), and `random`
  is seeded again from os.urandom.

`uuid.uuid4`, `secrets` and argon2's salts read os.urandom on every call, which SnapStart
keeps unique; aws_xray_sdk's samplers keep their own `Random`, but in Lambda the service
samples, not the SDK. Nothing in `reservations` keeps random state at module level.

The hooks come from `snapshot_restore_py`, which Lambda's Python runtimes (3.12 and later)
ship: every `Container` registers them (once) when it is created, so a handler that builds
its container at import registers them during init, as Lambda requires. Elsewhere (tests,
`make dev`, the CLI) the module does not exist and nothing is registered; the hooks are
plain functions that can be called directly.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import weakref
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reservations.composition import Container

logger = logging.getLogger("reservations.snapstart")

# What an API function's first requests import on first use (measured: about 0.4 s
# together, boto3 alone ~0.2 s); importing them before the snapshot does no I/O.
WARM_MODULES = (
    "anyio._backends._asyncio",  # Mangum and Starlette run the sync routes in anyio's threads
    "sqlalchemy.dialects.postgresql.pg8000",  # the engine's dialect and driver
    "pg8000",
    "redis",  # the slot cache and the rate limiter
    "reservations.adapters.slot_cache",
    "reservations.adapters.rate_limit",
    "boto3",  # EventBridge (publish after a write) and Secrets Manager (signing key)
    "aws_lambda_powertools.utilities.parameters",
    "reservations.adapters.event_bus",
    "reservations.usecases.events",
    "limits",  # the rate limiter imports it on first use
    "limits.storage",
    "limits.strategies",
    "argon2",  # password hashing
    "passlib.context",
    "passlib.handlers.argon2",
)

_containers: weakref.WeakSet[Container] = weakref.WeakSet()
# The runtime module(s) the hooks were registered with: registering twice would run them twice.
_registered_with: weakref.WeakSet[ModuleType] = weakref.WeakSet()


def track(container: Container) -> None:
    """Remember `container` for the after-restore hook (until it is garbage collected)
    and make sure the hooks are registered with Lambda's runtime, where there is one."""
    _containers.add(container)
    register()


def register() -> bool:
    """Register `before_snapshot` and `after_restore` with Lambda's runtime, once.

    False where the runtime's `snapshot_restore_py` is missing (anywhere but Lambda)."""
    try:
        import snapshot_restore_py
    except ImportError:
        return False
    if snapshot_restore_py not in _registered_with:
        snapshot_restore_py.register_before_snapshot(before_snapshot)
        snapshot_restore_py.register_after_restore(after_restore)
        _registered_with.add(snapshot_restore_py)
    return True


def before_snapshot() -> None:
    """Warm the lazy imports and close pooled database connections before the snapshot."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:  # a missing optional module must not fail the publish
            logger.warning("snapstart: %s not preloaded (%s)", name, error)
    for container in list(_containers):
        container.close()


def after_restore() -> None:
    """Give this restored environment its own randomness and its own connections."""
    random.seed(os.urandom(32))
    containers = list(_containers)
    for container in containers:
        container.after_restore()
    logger.info("snapstart: restored; %d container(s) dropped their connections", len(containers))
