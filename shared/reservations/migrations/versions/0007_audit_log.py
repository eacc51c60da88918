"""The audit log: append-only, written in the transaction of the change it records.

Revision ID: 0007
Revises: 0006
"""

# Expand-only. Rows are never updated or deleted by the application: a trigger refuses
# both, and the migrate function revokes UPDATE and DELETE from the API's role. Two
# owner-defined functions are the only exceptions: clearing an erased user's source
# addresses, and purging entries older than the retention.

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            -- No foreign keys: entries outlive what they name (and may not be updated).
            actor_id bigint,
            actor_role varchar(16) NOT NULL CONSTRAINT audit_log_actor_role_check
                CHECK (actor_role IN ('patient', 'provider', 'admin', 'system', 'anonymous')),
            action varchar(64) NOT NULL,
            target_type varchar(16) NOT NULL CONSTRAINT audit_log_target_type_check
                CHECK (target_type IN ('user', 'provider', 'appointment', 'visit_type', 'availability', 'webhook')),
            target_id bigint,
            -- The user the entry is about besides the actor (an appointment's other party).
            subject_id bigint,
            request_id varchar(128),
            source_ip varchar(64),
            details jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
        CREATE INDEX audit_log_subject ON audit_log (subject_id, id);
        CREATE INDEX audit_log_target ON audit_log (target_type, target_id, id);
        CREATE INDEX audit_log_at ON audit_log (at);

        CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('reservations.audit_maintenance', true) = 'on' THEN
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END IF;
            RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

        -- Erasure: an erased user's entries keep what happened, not where from.
        CREATE FUNCTION audit_forget_addresses(user_id bigint) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE cleared bigint;
        BEGIN
            PERFORM set_config('reservations.audit_maintenance', 'on', true);
            UPDATE audit_log SET source_ip = NULL
                WHERE (actor_id = user_id OR subject_id = user_id) AND source_ip IS NOT NULL;
            GET DIAGNOSTICS cleared = ROW_COUNT;
            PERFORM set_config('reservations.audit_maintenance', 'off', true);
            RETURN cleared;
        END $$;

        -- Retention: at most `batch` entries older than `cutoff`, never younger than 30 days.
        CREATE FUNCTION audit_purge(cutoff timestamptz, batch integer) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE purged bigint;
        BEGIN
            IF cutoff > now() - interval '30 days' THEN
                RAISE EXCEPTION 'audit entries are kept at least 30 days' USING ERRCODE = 'insufficient_privilege';
            END IF;
            PERFORM set_config('reservations.audit_maintenance', 'on', true);
            DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < cutoff ORDER BY id LIMIT batch);
            GET DIAGNOSTICS purged = ROW_COUNT;
            PERFORM set_config('reservations.audit_maintenance', 'off', true);
            RETURN purged;
        END $$;

        -- Retention: appointments that ended before `cutoff`, with their history (whose
        -- append-only trigger lets this function, and only it, through) and reminders; a
        -- kept successor or predecessor loses its link to a purged one.
        CREATE OR REPLACE FUNCTION appointment_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('reservations.retention_purge', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'appointment_history is append-only' USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE FUNCTION purge_appointments(cutoff timestamptz, batch integer) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE purged bigint;
        BEGIN
            IF cutoff > now() - interval '30 days' THEN
                RAISE EXCEPTION 'appointments are kept at least 30 days' USING ERRCODE = 'insufficient_privilege';
            END IF;
            CREATE TEMP TABLE IF NOT EXISTS purging (id bigint PRIMARY KEY) ON COMMIT DROP;
            DELETE FROM purging;
            INSERT INTO purging SELECT id FROM appointments WHERE end_time < cutoff ORDER BY id LIMIT batch;
            UPDATE appointments SET rescheduled_from = NULL WHERE rescheduled_from IN (SELECT id FROM purging);
            UPDATE appointments SET rescheduled_to = NULL WHERE rescheduled_to IN (SELECT id FROM purging);
            PERFORM set_config('reservations.retention_purge', 'on', true);
            DELETE FROM appointments WHERE id IN (SELECT id FROM purging);
            GET DIAGNOSTICS purged = ROW_COUNT;
            PERFORM set_config('reservations.retention_purge', 'off', true);
            RETURN purged;
        END $$;

        -- Every appointment transition (the domain's, lazy and swept expiries alike). Its
        -- source address is the access log's, found by the request id.
        CREATE FUNCTION appointment_history_to_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            current appointments;
        BEGIN
            SELECT * INTO current FROM appointments WHERE id = NEW.appointment_id;
            INSERT INTO audit_log (at, actor_id, actor_role, action, target_type, target_id, subject_id,
                                   request_id, source_ip, details)
            VALUES (NEW.at, NEW.actor_id, NEW.actor_role, 'appointment.' || NEW.to_status, 'appointment',
                    NEW.appointment_id,
                    CASE WHEN NEW.actor_id = current.patient_id THEN current.provider_id ELSE current.patient_id END,
                    NEW.request_id, NULL,
                    jsonb_build_object('from_status', NEW.from_status, 'to_status', NEW.to_status,
                                       'provider_id', current.provider_id, 'patient_id', current.patient_id));
            RETURN NULL;
        END $$;
        CREATE TRIGGER appointment_history_audit AFTER INSERT ON appointment_history
            FOR EACH ROW EXECUTE FUNCTION appointment_history_to_audit();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION purge_appointments(timestamptz, integer);
        CREATE OR REPLACE FUNCTION appointment_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'appointment_history is append-only' USING ERRCODE = 'insufficient_privilege';
        END $$;
        DROP TRIGGER appointment_history_audit ON appointment_history;
        DROP FUNCTION appointment_history_to_audit();
        DROP FUNCTION audit_purge(timestamptz, integer);
        DROP FUNCTION audit_forget_addresses(bigint);
        DROP TABLE audit_log;
        DROP FUNCTION audit_log_is_append_only();
        """
    )
