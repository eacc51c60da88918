"""Retention in the sync pass: appointments that ended longer ago than RETENTION_DAYS go,
with their histories (append-only otherwise) and reminders; audit entries older than
AUDIT_RETENTION_DAYS go; everything younger stays. On a database of the module's own."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from reservations.domain.audit import record_audit
from tests.builders import NOW, create_user
from tests.world import SyncWorld

DAY = timedelta(days=1)


def appointment(world: SyncWorld, provider: int, patient: int, ended_days_ago: float, **links: int) -> int:
    end = NOW - ended_days_ago * DAY
    with world.container.unit_of_work() as session:
        appointment_id = int(
            session.execute(
                text(
                    "INSERT INTO appointments (provider_id, patient_id, start_time, end_time, busy_start, busy_end, "
                    "status, created_at, updated_at, visit_type_id, rescheduled_from) "
                    "SELECT :p, :q, :s, :e, :s, :e, 'completed', :s, :s, v.id, :from "
                    "FROM visit_types v WHERE v.provider_id = :p AND v.is_default RETURNING id"
                ),
                {
                    "p": provider,
                    "q": patient,
                    "s": end - timedelta(minutes=15),
                    "e": end,
                    "from": links.get("moved_from"),
                },
            ).scalar_one()
        )
        session.execute(
            text(
                "INSERT INTO appointment_history (appointment_id, at, to_status, actor_role) "
                "VALUES (:id, :at, 'completed', 'system')"
            ),
            {"id": appointment_id, "at": end},
        )
    return appointment_id


def audit_entry(world: SyncWorld, days_ago: float) -> None:
    with world.container.unit_of_work() as session:
        record_audit(
            session,
            at=NOW - days_ago * DAY,
            actor_id=None,
            actor_role="system",
            action="retention.probe",
            target_type="user",
            target_id=None,
        )


def test_retention_purges_exactly_what_is_older(sync_world: SyncWorld) -> None:
    sync_world.container.configure(retention_days=730, audit_retention_days=365)
    provider, patient = create_user(sync_world.container, "provider"), create_user(sync_world.container, "patient")
    old = appointment(sync_world, provider.id, patient.id, 731)
    kept = appointment(sync_world, provider.id, patient.id, 729, moved_from=old)
    for days in (366, 364):
        audit_entry(sync_world, days)

    summary = sync_world.container.housekeeping.sync_pass()

    with sync_world.container.unit_of_work() as session:
        remaining = session.execute(text("SELECT id, rescheduled_from FROM appointments")).all()
        histories = session.execute(text("SELECT DISTINCT appointment_id FROM appointment_history")).scalars().all()
        probes = (
            session.execute(text("SELECT at FROM audit_log WHERE action = 'retention.probe' ORDER BY at"))
            .scalars()
            .all()
        )
    assert [(row.id, row.rescheduled_from) for row in remaining] == [(kept, None)]
    assert list(histories) == [kept]
    assert probes == [NOW - 364 * DAY]
    assert summary.appointments_purged == 1
    # The two histories' entries older than 365 days went with the probe (kept's is 729 days old).
    assert summary.audit_entries_purged >= 1
