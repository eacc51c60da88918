"""openapi.json is generated (make openapi) and never drifts from the apps."""

from __future__ import annotations

import json
import sys

from tests.infra.helpers import REPO, run
from tests.support import FunctionClient, load_function


def test_committed_openapi_json_matches_the_apps() -> None:
    # A fresh interpreter: the generator imports every handler, as `make openapi` does.
    result = run([sys.executable, "scripts/openapi.py", "--check"], timeout=120)
    assert result.returncode == 0, f"openapi.json drifted; run `make openapi`:\n{result.stdout}{result.stderr}"


def test_merged_document_is_one_api_with_shared_components() -> None:
    document = json.loads((REPO / "openapi.json").read_text())
    assert document["info"]["title"] == "Reservations API"
    tags = {op["tags"][0] for item in document["paths"].values() for op in item.values()}
    assert tags == {"auth", "providers", "appointments", "integrations"}
    assert "OAuth2PasswordBearer" in document["components"]["securitySchemes"]
    # Every $ref resolves inside the merged document.
    text = json.dumps(document)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in document["components"]["schemas"], name


def test_docs_function_serves_the_document_and_swagger_ui() -> None:
    docs = FunctionClient(load_function("docs"))
    document = docs.get("/openapi.json")
    assert document.status == 200
    assert document.body == json.loads((REPO / "openapi.json").read_text())
    assert "max-age" in document.headers["cache-control"]
    page = docs.get("/docs")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    # Swagger UI from this function's own files; the initializer is a file too (the CSP has no 'unsafe-inline').
    assert 'src="docs/swagger-ui-bundle.js"' in page.body and 'src="docs/swagger-initializer.js"' in page.body
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert "SwaggerUIBundle" in docs.get("/docs/swagger-initializer.js").body
