"""Local stand-ins for AWS services, for development and tests on a bare machine.

- ``reservations.local.gateway``: the project's own replacement for
  ``sam local start-api`` (reads ``template.yaml``, calls the real handlers in-process
  with API Gateway HTTP API payload 2.0 events, no Docker).
- ``reservations.local.embedded_postgres``: starts a private Postgres (``pgserver``)
  when no server is reachable at ``DATABASE_URL``.

Nothing is imported here on purpose: this package ships in the Lambda layer, and its
dev-only dependencies (uvicorn, pgserver) must never load in a function.
"""
