from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
database_url = str(config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url"))

# A transaction-level advisory lock keeps two concurrent deploys from migrating at once.
MIGRATION_LOCK_ID = 827_361_002


def run_migrations_online() -> None:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=False)
        with context.begin_transaction():
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
