"""Idempotency records stop storing an HTTP status.

Revision ID: 0002
Revises: 0001
"""

# A replay answers with its operation's success status, which the HTTP edge knows.
# Expand-only, like every migration here: the column stays, with a default, so an older
# release rolled back onto this schema still reads and writes it.

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_records ALTER COLUMN status_code SET DEFAULT 200")


def downgrade() -> None:
    op.execute("ALTER TABLE idempotency_records ALTER COLUMN status_code DROP DEFAULT")
