"""Merge the OpenAPI documents of every HTTP function into the repository's openapi.json.

    python scripts/openapi.py            # (re)write openapi.json   (make openapi)
    python scripts/openapi.py --check    # exit 1 with a diff when openapi.json is stale

The functions and the routes each one serves come from template.yaml (through the
local gateway's reader), so the document describes exactly what API Gateway routes:
a route a FastAPI app has but the template does not is left out (the route-parity
test in tests/infra reports it). Each operation is tagged with its function's group.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
OUTPUT = REPO / "openapi.json"
TITLE = "Reservations API"
DESCRIPTION = (
    "Appointment reservations for providers and patients. Authenticate with POST /token "
    "(form fields username, password) and send the access token as `Authorization: Bearer <token>`."
)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Served by the docs function, which documents the others rather than itself.
DOCS_PATHS = frozenset({"/openapi.json", "/docs"})


def merged_document(template: Path = TEMPLATE) -> dict[str, Any]:
    from reservations_dev.harness import load_module
    from reservations_dev.template import load_routes

    routes_by_function: dict[str, list[Any]] = {}
    for route in load_routes(template):
        routes_by_function.setdefault(route.function_name, []).append(route)

    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}
    version = "1.0.0"
    openapi_version = "3.1.0"
    for function_name, routes in routes_by_function.items():
        if {r.path for r in routes} <= DOCS_PATHS:
            continue
        app = getattr(load_module(routes[0], fresh=True), "app", None)  # its own cold container
        if app is None or getattr(app, "openapi_url", None) is None:
            continue  # not a FastAPI app, or one that documents nothing
        document = app.openapi()
        openapi_version, version = document["openapi"], document["info"].get("version", version)
        group = routes[0].code_uri.name
        served = {(r.path, r.method.lower()) for r in routes}
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                if method not in HTTP_METHODS or (path, method) not in served:
                    continue
                key = f"{method.upper()} {path}"
                if key in owners:
                    raise ValueError(f"{key} is documented by both {owners[key]} and {function_name}")
                owners[key] = function_name
                tagged = {**operation, "tags": operation.get("tags") or [group]}
                paths.setdefault(path, {})[method] = tagged
        for section, entries in document.get("components", {}).items():
            target = components.setdefault(section, {})
            for name, value in entries.items():
                if name in target and target[name] != value:
                    raise ValueError(f"components.{section}.{name} differs between functions; rename one model")
                target[name] = value

    operation_ids = [op.get("operationId") for item in paths.values() for op in item.values()]
    duplicates = sorted({i for i in operation_ids if i and operation_ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate operationId(s) across functions: {', '.join(duplicates)}")

    return {
        "openapi": openapi_version,
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "paths": {path: dict(sorted(paths[path].items())) for path in sorted(paths)},
        "components": {
            section: dict(sorted(entries.items())) for section, entries in sorted(components.items()) if entries
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if openapi.json differs from the generated one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    # Importing a handler validates settings; nothing here connects to anything.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    text = render(merged_document())
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if args.check:
        if current == text:
            print(f"{args.output.name} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "openapi.json (committed)", "openapi.json (generated)", lineterm=""
        )
        print("\n".join(list(diff)[:80]))
        print(f"\n{args.output.name} is stale: run `make openapi` and commit the result", file=sys.stderr)
        return 1
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(f"{args.output.name} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
