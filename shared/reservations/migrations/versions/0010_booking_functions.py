"""A booking's reads in two calls: who and what it books or moves, then its queue and checks.

Revision ID: 0010
Revises: 0009
"""

# Expand-only: four new functions, nothing else. PL/pgSQL, so each statement's plan is
# cached per connection (the text statements they replace were planned on every call:
# planning a booking's INSERT cost a tenth of a millisecond, about what running it costs
# once its triggers are left out).
#
# reservation_context: a patient's reservation first read the caller's row (the token
# check, locked FOR NO KEY UPDATE so one patient's bookings run one at a time), then the
# provider's row FOR SHARE (an availability post cannot change the rules under it) with
# the visit type. One call now takes both locks in that order and answers the three rows
# as JSON (json.loads is C; pg8000 parses columns in Python); Python raises what the two
# reads raised, in the same order.
#
# move_context: a move first read the caller's row (the token check), then, in this
# order, locked the appointment's patient (FOR NO KEY UPDATE, as a reservation does), the
# appointment (FOR UPDATE), the provider (FOR SHARE) and read the visit type: five round
# trips, one call now, same locks in the same order.
#
# queue_booking: between the provider's row and the insert, a reservation or a move sent
# four statements, each a round trip and a statement built in Python: expire the stale
# holds in its way, queue on its advisory locks, read the provider's availability of the
# day, count the patient's holds and upcoming appointments (and the provider's day, under
# a daily cap). The function runs the same statements in the same order, so the lock
# order every booking keeps is unchanged: stale holds in the way, the daily-cap lock, the
# slot-day locks, then (the moved appointment and) the new row. Each statement reads a
# fresh snapshot, as separate statements did, so the availability and counts are read
# after the locks are held. What to decide stays in Python (booking.py): the functions
# answer facts, not verdicts.
#
# place_appointment: the new appointment, for a move the old row's pointer to it and the
# old row's history entry, the new row's history entry, then its days' version bumps (after
# every appointment row lock, as everywhere). Each history row's triggers (audit before,
# outbox after) see the rows written before it, as they did when these were separate
# statements; a conflict raises as the INSERT raised (SQLSTATE and constraint name).

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CONTEXT_SIGNATURE = "reservation_context(bigint, integer, text, bigint, bigint)"
MOVE_SIGNATURE = "move_context(bigint, integer, text, bigint, bigint)"
PLACE_SIGNATURE = (
    "place_appointment(bigint, bigint, bigint, timestamptz, timestamptz, timestamptz, timestamptz, text, "
    "timestamptz, text, bigint, timestamptz, bigint, text, text, text, date[])"
)
SIGNATURE = (
    "queue_booking(bigint, bigint, timestamptz, text, timestamptz, timestamptz, timestamptz, timestamptz, "
    "interval, integer[], text, timestamptz, timestamptz, text[], bigint, date, date)"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION reservation_context(
            caller_id bigint, caller_token_version integer, caller_role text,
            wanted_provider bigint, wanted_visit_type bigint
        ) RETURNS json LANGUAGE plpgsql VOLATILE SET search_path = public AS $$
        DECLARE
            caller users;
            provider users;
            visit visit_types;
        BEGIN
            SELECT * INTO caller FROM users WHERE id = caller_id FOR NO KEY UPDATE;
            IF caller.id IS NULL OR caller.token_version <> caller_token_version OR caller.role <> caller_role THEN
                RETURN json_build_object('caller', NULL);
            END IF;
            SELECT * INTO provider FROM users WHERE id = wanted_provider AND role = 'provider' FOR SHARE;
            IF provider.id IS NOT NULL THEN
                SELECT * INTO visit FROM visit_types AS v
                WHERE v.provider_id = provider.id AND v.active
                    AND CASE WHEN wanted_visit_type IS NULL THEN v.is_default ELSE v.id = wanted_visit_type END
                LIMIT 1;
            END IF;
            RETURN json_build_object(
                'caller', row_to_json(caller),
                'provider', CASE WHEN provider.id IS NOT NULL THEN row_to_json(provider) END,
                'visit_type', CASE WHEN visit.id IS NOT NULL THEN row_to_json(visit) END);
        END $$;
        """
    )
    op.execute(
        """
        CREATE FUNCTION move_context(
            caller_id bigint, caller_token_version integer, caller_role text,
            moved_id bigint, wanted_visit_type bigint
        ) RETURNS json LANGUAGE plpgsql VOLATILE SET search_path = public AS $$
        DECLARE
            caller users;
            patient bigint;
            moved appointments;
            provider users;
            visit visit_types;
        BEGIN
            SELECT * INTO caller FROM users WHERE id = caller_id;
            IF caller.id IS NULL OR caller.token_version <> caller_token_version OR caller.role <> caller_role THEN
                RETURN json_build_object('caller', NULL);
            END IF;
            -- The patient's row first, as a reservation takes it, then the appointment: the
            -- other order deadlocks with the patient's own reservations. Only an appointment
            -- the caller may see (a party to it, or an admin).
            SELECT u.id INTO patient FROM users AS u
            WHERE u.id = (SELECT a.patient_id FROM appointments AS a WHERE a.id = moved_id
                          AND (caller.role = 'admin' OR caller.id IN (a.patient_id, a.provider_id)))
            FOR NO KEY UPDATE;
            IF patient IS NOT NULL THEN
                SELECT * INTO moved FROM appointments AS a WHERE a.id = moved_id
                    AND (caller.role = 'admin' OR caller.id IN (a.patient_id, a.provider_id))
                FOR UPDATE;
            END IF;
            IF moved.id IS NOT NULL THEN
                SELECT * INTO provider FROM users WHERE id = moved.provider_id AND role = 'provider' FOR SHARE;
                IF wanted_visit_type IS NULL THEN  -- the appointment keeps its type, even a retired one
                    SELECT * INTO visit FROM visit_types WHERE id = moved.visit_type_id;
                ELSE
                    SELECT * INTO visit FROM visit_types AS v
                    WHERE v.provider_id = moved.provider_id AND v.active AND v.id = wanted_visit_type;
                END IF;
            END IF;
            RETURN json_build_object(
                'caller', row_to_json(caller),
                'appointment', CASE WHEN moved.id IS NOT NULL THEN row_to_json(moved) END,
                'provider', CASE WHEN provider.id IS NOT NULL THEN row_to_json(provider) END,
                'visit_type', CASE WHEN visit.id IS NOT NULL THEN row_to_json(visit) END);
        END $$;
        """
    )
    op.execute(
        """
        CREATE FUNCTION place_appointment(
            new_provider bigint, new_patient bigint, new_visit_type bigint,
            new_start timestamptz, new_end timestamptz, new_busy_start timestamptz, new_busy_end timestamptz,
            new_status text, new_expires timestamptz, new_note text, moved_from bigint,
            at_time timestamptz, actor bigint, actor_role text, request text, address text, bumped_days date[]
        ) RETURNS bigint LANGUAGE plpgsql VOLATILE
          SET search_path = public SET plan_cache_mode = force_generic_plan AS $$
        DECLARE
            placed bigint;
        BEGIN
            INSERT INTO appointments (provider_id, patient_id, visit_type_id, start_time, end_time, busy_start,
                                      busy_end, status, expires_at, note, rescheduled_from, created_at, updated_at)
            VALUES (new_provider, new_patient, new_visit_type, new_start, new_end, new_busy_start, new_busy_end,
                    new_status, new_expires, new_note, moved_from, at_time, at_time)
            RETURNING id INTO placed;
            IF moved_from IS NOT NULL THEN
                UPDATE appointments SET rescheduled_to = placed WHERE id = moved_from;
                INSERT INTO appointment_history
                    (appointment_id, at, from_status, to_status, actor_id, actor_role, request_id, source_ip)
                VALUES (moved_from, at_time, new_status, 'rescheduled', actor, actor_role, request, address);
            END IF;
            INSERT INTO appointment_history
                (appointment_id, at, from_status, to_status, actor_id, actor_role, request_id, source_ip)
            VALUES (placed, at_time, NULL, new_status, actor, actor_role, request, address);
            INSERT INTO slot_day_versions (provider_id, day, version)
            SELECT new_provider, d, 1 FROM unnest(bumped_days) AS d ORDER BY d
            ON CONFLICT (provider_id, day) DO UPDATE SET version = slot_day_versions.version + 1;
            RETURN placed;
        END $$;
        """
    )
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
    op.execute(f"DROP FUNCTION {CONTEXT_SIGNATURE}")
    op.execute(f"DROP FUNCTION {MOVE_SIGNATURE}")
    op.execute(f"DROP FUNCTION {PLACE_SIGNATURE}")
