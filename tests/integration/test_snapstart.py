"""SnapStart runtime hooks (reservations.snapstart) against real Postgres and Redis: after a
restore, function containers that served requests before the snapshot open their own
database and Redis connections (leaving the snapshot's sockets alone) and draw their own
random numbers; before the snapshot, lazy imports are loaded and pooled connections
closed; loading a handler registers the hooks with Lambda's runtime (`snapshot_restore_py`,
faked here) exactly once, and without that runtime nothing is registered."""

from __future__ import annotations

import random
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pg8000.dbapi
import pytest
from sqlalchemy import text

from reservations import snapstart
from reservations.adapters.slot_cache import SlotCache
from reservations.composition import Container
from reservations.config import Settings
from tests.support import load_function
from tests.world import World, container_of

WEEK = {
    "general_schedule": {
        "start_date": "2027-01-04",
        "end_date": "2027-01-31",
        "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
    }
}


def backend_pid(container: Container) -> int:
    """The Postgres backend serving the container's next unit of work."""
    with container.unit_of_work() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def pooled_connection(container: Container) -> Any:
    """The DBAPI connection the container's pool holds (a pool of one in a function)."""
    with container.engine.connect() as connection:
        return connection.connection.dbapi_connection


def pid_of(dbapi_connection: Any) -> int:
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    return int(cursor.fetchone()[0])


def slot_cache(container: Container) -> SlotCache:
    store = container.day_store
    assert isinstance(store, SlotCache)
    return store


@dataclass
class Served:
    world: World
    provider: dict[str, Any]
    patient: dict[str, Any]

    def listing(self) -> Any:
        return self.world.slots(self.provider, self.patient)

    def sign_in(self) -> Any:
        form = {"username": self.patient["email"], "password": self.patient["password"]}
        return self.world.auth.post("/token", form=form)


@pytest.fixture
def served(world: World) -> Served:
    """The functions have served requests before the "snapshot": sign-ups and sign-ins
    (auth, through the rate limiter), an availability write and a listing (providers,
    read through the slot cache)."""
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    listing = world.slots(provider, patient)
    assert listing.status == 200 and listing.headers["x-cache"] == "miss"
    return Served(world, provider, patient)


@pytest.fixture
def random_state() -> Iterator[object]:
    state = random.getstate()
    yield state
    random.setstate(state)


class FakeRuntime(types.ModuleType):
    """Lambda's `snapshot_restore_py`: records what is registered."""

    def __init__(self) -> None:
        super().__init__("snapshot_restore_py")
        self.before: list[Callable[[], None]] = []
        self.after: list[Callable[[], None]] = []

    def register_before_snapshot(self, func: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        self.before.append(func)

    def register_after_restore(self, func: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        self.after.append(func)


# --- after a restore ------------------------------------------------------------------------------


def test_after_a_restore_the_next_unit_of_work_opens_its_own_database_connection(served: Served) -> None:
    container = container_of(served.world.providers)
    snapshot_socket = pooled_connection(container)
    before = backend_pid(container)
    assert backend_pid(container) == before == pid_of(snapshot_socket)  # the pool keeps its connection

    snapstart.after_restore()

    after = backend_pid(container)
    assert after != before
    assert backend_pid(container) == after
    # The snapshot's connection was forgotten, not closed: it still answers as itself
    # (closing it would talk over a socket every restored copy shares).
    assert pid_of(snapshot_socket) == before
    snapshot_socket.close()
    # And the function serves the next request as before.
    again = served.listing()
    assert again.status == 200 and again.headers["x-cache"] == "hit"


def test_after_a_restore_the_slot_cache_and_the_limiter_are_new_redis_clients(served: Served) -> None:
    providers, auth = container_of(served.world.providers), container_of(served.world.auth)
    cache, limiter = slot_cache(providers), auth.rate_limiter
    connection_before = cache.client.client_id()
    assert cache.client.client_id() == connection_before  # one pooled connection, reused

    snapstart.after_restore()

    fresh = slot_cache(providers)
    assert fresh is not cache and fresh.client is not cache.client
    assert fresh.client.client_id() != connection_before  # a new connection to Redis
    assert cache.client.client_id() == connection_before  # the old one was left alone
    cache.client.close()
    assert auth.rate_limiter is not limiter
    # The new clients work: the listing is a hit from Redis, sign-ins are counted there
    # (a limiter that cannot reach Redis lets them through uncounted).
    again = served.listing()
    assert again.status == 200 and again.headers["x-cache"] == "hit"
    first, second = served.sign_in(), served.sign_in()
    assert first.status == second.status == 200
    # Fewer left after the second: counted (by at least this sign-in; a suite running
    # beside this one on the same Redis may count its own too).
    assert int(second.headers["ratelimit-remaining"]) < int(first.headers["ratelimit-remaining"])


def test_environments_restored_from_one_snapshot_draw_different_random_numbers(random_state: object) -> None:
    snapshot = random.getstate()  # what every environment restored from the snapshot starts with
    draws = []
    for _ in range(2):
        random.setstate(snapshot)
        snapstart.after_restore()
        draws.append([random.random() for _ in range(4)])
    replay = random.Random()
    replay.setstate(snapshot)
    without_the_hook = [replay.random() for _ in range(4)]
    assert without_the_hook not in draws
    assert draws[0] != draws[1]


# --- before the snapshot --------------------------------------------------------------------------


def test_before_the_snapshot_lazy_imports_are_loaded_and_pooled_connections_closed(served: Served) -> None:
    container = container_of(served.world.providers)
    pooled = pooled_connection(container)
    before = backend_pid(container)

    snapstart.before_snapshot()

    assert [name for name in snapstart.WARM_MODULES if name not in sys.modules] == []
    with pytest.raises(pg8000.dbapi.InterfaceError):  # closed, while the socket was still ours
        pid_of(pooled)
    assert backend_pid(container) != before


# --- registration with Lambda's runtime -----------------------------------------------------------


def test_loading_handlers_registers_the_hooks_once_and_they_reach_their_containers(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = FakeRuntime()
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)
    modules = [load_function("appointments"), load_function("appointments")]  # two cold starts
    try:
        assert runtime.before == [snapstart.before_snapshot]
        assert runtime.after == [snapstart.after_restore]
        pids = [backend_pid(module.container) for module in modules]

        (restore,) = runtime.after
        restore()

        after = [backend_pid(module.container) for module in modules]
        assert all(new != old for new, old in zip(after, pids, strict=True)), (pids, after)
    finally:
        for module in modules:
            module.container.close()


def test_without_lambdas_runtime_nothing_is_registered_and_containers_work(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # `import` raises ImportError
    assert snapstart.register() is False
    container = Container(settings)
    try:
        pid = backend_pid(container)
        snapstart.after_restore()  # still callable directly (the tests above do)
        assert backend_pid(container) != pid
    finally:
        container.close()
