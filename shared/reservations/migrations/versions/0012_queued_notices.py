"""Appointment e-mails are queued as notices and rendered when they are sent.

Revision ID: 0012
Revises: 0011
"""

# Expand-only. Composing an appointment e-mail (MIME headers, the text, the iCalendar
# invitation) took about two thirds of a confirmation's or cancellation's time, in the
# consumer that runs right after the write. A queued row now holds either the rendered
# message, as before (password resets, verification, webhook notices), or the notice it
# is rendered from (JSON); the dispatch pass renders a notice just before sending it, with
# the row's created_at as its Date and DTSTAMP. A sent row keeps neither (message '',
# notice NULL), as a sent message kept no body before. An older events function that claims
# a notice row stops its pass there; what it claimed returns after the 60-second lease
# (one attempt counted of ten), so a deploy's brief overlap loses no mail.

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE outgoing_mail ADD COLUMN notice jsonb;
        ALTER TABLE outgoing_mail ALTER COLUMN message DROP NOT NULL;
        ALTER TABLE outgoing_mail ADD CONSTRAINT outgoing_mail_content
            CHECK (message IS NOT NULL OR notice IS NOT NULL);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM outgoing_mail WHERE message IS NULL;
        ALTER TABLE outgoing_mail DROP CONSTRAINT outgoing_mail_content;
        ALTER TABLE outgoing_mail ALTER COLUMN message SET NOT NULL;
        ALTER TABLE outgoing_mail DROP COLUMN notice;
        """
    )
