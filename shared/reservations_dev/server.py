"""A docker-less ``sam local start-api``: template.yaml routes -> in-process handlers.

The gateway reads the ``HttpApi`` events of every ``AWS::Serverless::Function`` in the
SAM template, so the local API cannot drift from what is deployed. Each HTTP request is
turned into the API Gateway HTTP API payload format 2.0 event that AWS would send, the
real handler is called in a worker thread, and its result is translated back the way
API Gateway does it (including its error responses).

Dev-only: it needs uvicorn (imported lazily), which is not part of the Lambda layer.
Run it with ``python -m reservations_dev.server --template template.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp

from reservations_dev.events import build_event, scheduled_event, to_http_response
from reservations_dev.harness import close_event_loop, ensure_event_loop, invoke
from reservations_dev.template import (
    ANY_METHOD,
    GREEDY,
    LITERAL,
    PathSegment,
    Route,
    ScheduledFunction,
    compile_path,
    load_routes,
    load_schedules,
    split_path,
)

logger = logging.getLogger("reservations_dev.gateway")  # the gateway's one log channel, also when run as __main__

T = TypeVar("T")

# API Gateway's own limit; a bigger request never reaches the function on AWS.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024

# What API Gateway (HTTP API) answers itself, byte for byte, so clients see the same.
NOT_FOUND_BODY = {"message": "Not Found"}
INTERNAL_ERROR_BODY = {"message": "Internal Server Error"}
TOO_LARGE_BODY = {"message": "Request Entity Too Large"}
UNAVAILABLE_BODY = {"message": "Service Unavailable"}
# HTTP APIs answer 500 when the function raises, times out or returns a malformed
# response (REST APIs answer 502 in the same cases; the access log of an HTTP API shows
# status 500 with integrationStatus 200).
INTEGRATION_ERROR_STATUS = 500


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


class RouteTable:
    """API Gateway's route selection for HTTP APIs.

    Precedence: the most specific path wins segment by segment (literal before
    ``{var}`` before ``{greedy+}``), then an exact method before ``ANY``; ``$default``
    only when nothing else matches. A path that exists under another method is a miss,
    exactly like an unknown path.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._default = next((r for r in self.routes if r.is_default), None)
        compiled = [(r, compile_path(r.path, r.function_name)) for r in self.routes if not r.is_default]
        # Sorting once makes the first match the most specific one.
        self._compiled = sorted(
            compiled,
            key=lambda item: (tuple(s.kind for s in item[1]), item[0].method == ANY_METHOD),
        )

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """Match a request; ``raw_path`` is percent-encoded, as on the request line."""
        method = method.upper()
        request_parts = split_path(raw_path)
        for route, segments in self._compiled:
            if route.method not in (method, ANY_METHOD):
                continue
            params = _match_segments(segments, request_parts)
            if params is not None:
                return RouteMatch(route, params)
        if self._default is not None:
            return RouteMatch(self._default, {})
        return None


def _match_segments(segments: Sequence[PathSegment], parts: Sequence[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for index, segment in enumerate(segments):
        if segment.kind == GREEDY:
            rest = "/".join(parts[index:])
            if not rest:
                return None  # `/files/{proxy+}` does not match `/files` itself
            params[segment.value] = unquote(rest)
            return params
        if index >= len(parts):
            return None
        # Split before decoding so an encoded "/" stays inside one segment.
        value = unquote(parts[index])
        if segment.kind == LITERAL:
            if value != segment.value:
                return None
        elif not value:
            return None
        else:
            params[segment.value] = value
    return params if len(parts) == len(segments) else None


# --------------------------------------------------------------------------- workers


class _DaemonWorkers:
    """A small thread pool for handler calls whose threads never delay process exit.

    Starlette's threadpool (AnyIO) uses non-daemon threads: one handler stuck on a lock
    would keep ``make dev`` alive after Ctrl-C. Each worker also owns an asyncio event
    loop (the harness's ``ensure_event_loop``) for its whole life, closed when it ends.
    """

    def __init__(self, max_workers: int = 40, idle_timeout: float = 10.0) -> None:
        self._max_workers = max_workers
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition()
        self._queue: deque[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = deque()
        self._threads = 0
        self._waiting = 0
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("gateway worker pool is shut down")
            self._queue.append((future, fn))
            # Every queued call needs a thread of its own: a waiting one, or a new one.
            if len(self._queue) > self._waiting and self._threads < self._max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name="gateway-handler", daemon=True).start()
            self._cond.notify()
        return future

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        ensure_event_loop()
        try:
            while True:
                with self._cond:
                    if not self._queue and not self._closed:
                        self._waiting += 1
                        self._cond.wait(self._idle_timeout)
                        self._waiting -= 1
                    if not self._queue:
                        self._threads -= 1
                        return  # idle too long, or shut down
                    future, fn = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the awaiting request, which reports it
                    future.set_exception(exc)
                del future, fn
        finally:
            close_event_loop()


# --------------------------------------------------------------------------- app


@dataclass(frozen=True)
class BackgroundTask:
    """A callable the gateway runs every ``interval_seconds`` while it serves."""

    name: str
    interval_seconds: float
    func: Callable[[], object]
    run_at_startup: bool = False


def scheduled_tasks(
    template_path: Path, *, run_at_startup: bool = False, intervals: Mapping[str, float] | None = None
) -> list[BackgroundTask]:
    """Background tasks that invoke the template's scheduled functions at their rate, or
    every ``intervals[function name]`` seconds where given (a laptop wants its webhooks
    and mail within seconds, not at the next minute)."""
    tasks: list[BackgroundTask] = []
    for schedule in load_schedules(template_path):
        interval = (intervals or {}).get(schedule.function_name, schedule.interval_seconds)

        def fire(schedule: ScheduledFunction = schedule) -> object:
            return invoke(schedule, scheduled_event(schedule))

        tasks.append(
            BackgroundTask(
                name=f"{schedule.function_name}.{schedule.event_name} every {interval:g} s",
                interval_seconds=interval,
                func=fire,
                run_at_startup=run_at_startup,
            )
        )
    return tasks


class _PayloadTooLarge(Exception):
    pass


def _strip_stage(path: str, stage: str) -> str | None:
    """The path routes are matched against, or None outside the named stage."""
    if stage == "$default":
        return path
    prefix = f"/{stage}"
    if path == prefix or path.startswith(f"{prefix}/"):
        return path[len(prefix) :] or "/"
    return None  # API Gateway has no stage to send it to


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _PayloadTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _PayloadTooLarge  # chunked uploads have no content-length to check
    return bytes(body)


async def _run_periodically(task: BackgroundTask, workers: _DaemonWorkers) -> None:
    if not task.run_at_startup:
        await asyncio.sleep(task.interval_seconds)
    while True:
        try:
            await workers.run(task.func)
        except Exception:
            logger.exception("background task %s failed", task.name)
        await asyncio.sleep(task.interval_seconds)


def create_app(
    template_path: Path,
    *,
    on_startup: Sequence[Callable[[], None]] | None = None,
    background_tasks: Sequence[BackgroundTask] | None = None,
    max_workers: int = 40,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    stage: str = "$default",
) -> Starlette:
    """The gateway as an ASGI app serving every HttpApi route of ``template_path``.

    ``on_startup`` callables run once, in order, before the first request (e.g. start
    the embedded Postgres, run migrations). ``background_tasks`` run periodically in
    the worker pool until shutdown (e.g. ``scheduled_tasks(template_path)``).
    ``app.state.routes`` is the route list and ``app.state.route_table`` the matcher.

    ``stage`` other than ``$default`` serves the API under ``/<stage>/`` the way a named
    HttpApi stage does on AWS, where the prefix also reaches the function in ``rawPath``
    (a Mangum app then needs ``api_gateway_base_path``).
    """
    routes = load_routes(Path(template_path))
    table = RouteTable(routes)
    workers = _DaemonWorkers(max_workers=max_workers)

    async def gateway(request: Request) -> Response:
        scope = request.scope
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        route_path = _strip_stage(path, stage)
        match = table.match(request.method, route_path) if route_path is not None else None
        if match is None:
            return JSONResponse(NOT_FOUND_BODY, status_code=404)
        try:
            body = await _read_body(request, max_payload_bytes)
        except _PayloadTooLarge:
            return JSONResponse(TOO_LARGE_BODY, status_code=413)

        request_id = str(uuid.uuid4())
        server = scope.get("server")
        event = build_event(
            method=request.method,
            path=path,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
            route_key=match.route.route_key,
            path_parameters=match.path_parameters,
            source_ip=request.client.host if request.client else "127.0.0.1",
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
            scheme=scope.get("scheme", "http"),
            server_port=server[1] if server else None,
            request_id=request_id,
            stage=stage,
        )
        route = match.route
        try:
            result = await workers.run(lambda: invoke(route, event))
            response = to_http_response(result)
        except asyncio.CancelledError:
            # uvicorn cancels requests still running when its graceful shutdown times
            # out. The handler's daemon thread is left behind; answering (instead of
            # re-raising) spares the user a traceback for what is an ordinary Ctrl-C.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.warning("%s (%s) was still running at shutdown; abandoned", route.function_name, route.route_key)
            response = JSONResponse(UNAVAILABLE_BODY, status_code=503)
        except Exception as exc:  # whatever went wrong, API Gateway's answer is a bare 500
            logger.error("%s (%s) failed, requestId %s", route.function_name, route.route_key, request_id, exc_info=exc)
            response = JSONResponse(INTERNAL_ERROR_BODY, status_code=INTEGRATION_ERROR_STATUS)
        response.raw_headers.append((b"apigw-requestid", request_id.encode("ascii")))
        return response

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        for callback in on_startup or ():
            callback()
        running = [asyncio.create_task(_run_periodically(t, workers), name=t.name) for t in background_tasks or ()]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            workers.shutdown()

    catch_all = StarletteRoute(
        "/{path:path}",
        gateway,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    # Starlette's `path` convertor stops at a line break (%0A); API Gateway routes such paths.
    catch_all.path_regex = re.compile(r"^/(?P<path>.*)$", re.DOTALL)
    app = Starlette(routes=[catch_all], lifespan=lifespan)
    app.state.routes = routes
    app.state.route_table = table
    return app


def format_routes(routes: Iterable[Route]) -> str:
    """The start-up table, one ``METHOD PATH -> FunctionName`` line per route."""
    rows = [(r.method, r.path, r.function_name) for r in routes]
    if not rows:
        return "(no HttpApi routes in template)"
    method_width = max(len(m) for m, _, _ in rows)
    path_width = max(len(p) for _, p, _ in rows)
    return "\n".join(f"{m:<{method_width}} {p:<{path_width}} -> {f}" for m, p, f in rows)


@contextlib.contextmanager
def run_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout: float = 15.0,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields the base URL.

    ``port=0`` picks a free port. Leaving the block stops uvicorn (lifespan shutdown
    included) and joins its thread, so tests can start one server per module.
    """
    import uvicorn  # dev-only dependency, absent from the Lambda layer

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn could not start on {host}:{port} (see its log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {startup_timeout} s")
        time.sleep(0.01)
    try:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)


def serve(
    template_path: Path,
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    on_startup: Sequence[Callable[[], None]] | None = None,
    background_tasks: Sequence[BackgroundTask] | None = None,
    log_level: str = "info",
    stage: str = "$default",
) -> None:
    """Serve the template's API until Ctrl-C (the ``sam local start-api`` of this project)."""
    import uvicorn  # dev-only dependency, absent from the Lambda layer

    app = create_app(Path(template_path), on_startup=on_startup, background_tasks=background_tasks, stage=stage)
    where = "" if stage == "$default" else f" under /{stage}"
    print(f"Routes from {template_path}{where}:\n{format_routes(app.state.routes)}", flush=True)
    for task in background_tasks or ():
        print(f"Background: {task.name} every {task.interval_seconds:g} s", flush=True)
    # uvicorn re-raises the SIGINT it handled once it has shut down cleanly; that is
    # the normal way out, not an error worth a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        # A bounded graceful shutdown: a handler stuck on a lock must not keep Ctrl-C
        # from ending the process (its thread is a daemon, see _DaemonWorkers).
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reservations_dev.server", description=serve.__doc__)
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--pgdata",
        type=Path,
        help="start an embedded Postgres in this folder when DATABASE_URL is unreachable",
    )
    parser.add_argument("--schedules", action="store_true", help="also run the template's rate() schedules")
    parser.add_argument("--stage", default="$default", help="serve under /<stage>/ like a named HttpApi stage")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.pgdata is not None:
        from reservations_dev.embedded_postgres import ensure_postgres

        # Before any handler is imported, so their settings see the URL actually in use.
        os.environ["DATABASE_URL"] = ensure_postgres(os.environ.get("DATABASE_URL", ""), args.pgdata)
    serve(
        args.template,
        args.host,
        args.port,
        background_tasks=scheduled_tasks(args.template) if args.schedules else None,
        stage=args.stage,
    )


if __name__ == "__main__":
    main()
