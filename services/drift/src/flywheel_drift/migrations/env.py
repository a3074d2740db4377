"""Alembic environment: runs on the connection the drift detector hands it at start-up."""

from alembic import context

from flywheel_common import inbox, outbox  # noqa: F401  (and the shared ones)
from flywheel_common.db import Base
from flywheel_drift import storage  # noqa: F401  (registers the detector's tables)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through flywheel_common.migrations, which passes a connection"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
    version_table="alembic_version_drift",
)
with context.begin_transaction():
    context.run_migrations()
