"""Appointment transitions' audit entries carry the request's source address.

Revision ID: 0009
Revises: 0008
"""

# Expand-only. The history row carries the address to its audit trigger in a column that
# is never stored: the trigger (now BEFORE INSERT) copies it into the audit entry and
# clears it, and a CHECK refuses a row that would keep one. So the history, which is
# exported and kept for the other party's records, holds no address, and erasure clears
# addresses in the audit log alone (audit_forget_addresses), as before.

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# The trigger function of 0007 with what changes here as parameters: the address it
# records, and how it ends (a BEFORE trigger returns the row it lets through).
TRANSITION_TO_AUDIT = """
    CREATE OR REPLACE FUNCTION appointment_history_to_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        current appointments;
    BEGIN
        SELECT * INTO current FROM appointments WHERE id = NEW.appointment_id;
        INSERT INTO audit_log (at, actor_id, actor_role, action, target_type, target_id, subject_id,
                               request_id, source_ip, details)
        VALUES (NEW.at, NEW.actor_id, NEW.actor_role, 'appointment.' || NEW.to_status, 'appointment',
                NEW.appointment_id,
                CASE WHEN NEW.actor_id = current.patient_id THEN current.provider_id ELSE current.patient_id END,
                NEW.request_id, {source_ip},
                jsonb_build_object('from_status', NEW.from_status, 'to_status', NEW.to_status,
                                   'provider_id', current.provider_id, 'patient_id', current.patient_id));
        {ending}
    END $$;
    DROP TRIGGER appointment_history_audit ON appointment_history;
    CREATE TRIGGER appointment_history_audit {timing} INSERT ON appointment_history
        FOR EACH ROW EXECUTE FUNCTION appointment_history_to_audit();
"""


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE appointment_history ADD COLUMN source_ip varchar(64)
            CONSTRAINT appointment_history_source_ip_not_kept CHECK (source_ip IS NULL);
        """
    )
    op.execute(
        TRANSITION_TO_AUDIT.format(
            source_ip="NEW.source_ip", ending="NEW.source_ip := NULL; RETURN NEW;", timing="BEFORE"
        )
    )


def downgrade() -> None:
    op.execute(TRANSITION_TO_AUDIT.format(source_ip="NULL", ending="RETURN NULL;", timing="AFTER"))
    op.execute("ALTER TABLE appointment_history DROP COLUMN source_ip")
