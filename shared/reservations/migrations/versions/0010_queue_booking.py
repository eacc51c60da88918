"""A booking's queueing and checks in one call: its locks, lazy expiry and what it checks.

Revision ID: 0010
Revises: 0009
"""

# Expand-only: a new function, nothing else. Between the provider's row (read under FOR
# SHARE) and the insert, a reservation or a move sent four statements, each a round trip
# and a statement built in Python: expire the stale holds in its way, queue on its
# advisory locks, read the provider's availability of the day, count the patient's holds
# and upcoming appointments (and the provider's day, under a daily cap). The function runs
# the same statements in the same order, so the lock order every booking keeps is
# unchanged: stale holds in the way, the daily-cap lock, the slot-day locks, then (the
# moved appointment and) the new row. Each statement reads a fresh snapshot, as separate
# statements did, so the availability and counts are read after the locks are held. What
# to decide stays in Python (booking.py): the function answers facts, not verdicts.

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SIGNATURE = (
    "queue_booking(bigint, bigint, timestamptz, text, timestamptz, timestamptz, timestamptz, timestamptz, "
    "interval, integer[], text, timestamptz, timestamptz, text[], bigint, date, date)"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION queue_booking(
            booking_provider bigint, booking_patient bigint, at_time timestamptz, request text,
            busy_from timestamptz, busy_to timestamptz, visit_from timestamptz, visit_to timestamptz,
            longest_busy interval, slot_days integer[],
            cap_key text, cap_from timestamptz, cap_to timestamptz, occupying text[],
            replacing bigint, first_day date, last_day date
        ) RETURNS json LANGUAGE plpgsql VOLATILE SET search_path = public AS $$
        DECLARE
            booked bigint;
            found json;
        BEGIN
            -- Lazy expiry: holds past their deadline in the way of this booking (the
            -- provider's overlapping busy ranges, the patient's overlapping visits) stop
            -- counting now, each with its history row.
            WITH expired AS (
                UPDATE appointments SET status = 'expired', updated_at = at_time
                WHERE status = 'reserved' AND expires_at <= at_time AND (
                    (provider_id = booking_provider AND busy_start > busy_from - longest_busy
                        AND busy_start < busy_to AND busy_end > busy_from)
                    OR (patient_id = booking_patient AND start_time > visit_from - longest_busy
                        AND start_time < visit_to AND end_time > visit_from))
                RETURNING id
            )
            INSERT INTO appointment_history (appointment_id, at, from_status, to_status, actor_role, request_id)
            SELECT id, at_time, 'reserved', 'expired', 'system', request FROM expired;
            IF cap_key IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(hashtext(cap_key));
            END IF;
            -- Ascending UTC days: overlapping ranges share one, so racers queue here.
            PERFORM pg_advisory_xact_lock(booking_provider::integer, day) FROM unnest(slot_days) AS day;
            IF replacing IS NOT NULL THEN
                UPDATE appointments SET status = 'rescheduled', updated_at = at_time WHERE id = replacing;
            END IF;
            IF cap_key IS NOT NULL THEN
                SELECT count(*) INTO booked FROM appointments
                WHERE provider_id = booking_provider AND start_time >= cap_from AND start_time < cap_to
                    AND (status = ANY(occupying) OR (status = 'reserved' AND expires_at > at_time));
            END IF;
            SELECT json_build_object(
                'booked', booked,
                'holds', count(*) FILTER (WHERE status = 'reserved' AND expires_at > at_time),
                'ahead', count(*) FILTER (WHERE start_time > at_time
                    AND (status = 'confirmed' OR (status = 'reserved' AND expires_at > at_time))),
                'periods', (
                    SELECT coalesce(json_agg(json_build_array(start_date, end_date, windows) ORDER BY start_date), '[]')
                    FROM availability_periods
                    WHERE provider_id = booking_provider AND start_date <= last_day AND end_date >= first_day),
                'days', (
                    SELECT coalesce(json_agg(json_build_array(kind, day, windows)), '[]')
                    FROM availability_days
                    WHERE provider_id = booking_provider AND day BETWEEN first_day AND last_day))
            INTO found
            FROM appointments WHERE patient_id = booking_patient;
            RETURN found;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
