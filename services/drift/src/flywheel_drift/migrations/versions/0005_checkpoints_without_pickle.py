"""checkpoints in the versioned FWCK format: earlier (pickled) window states and label-join
logs are dropped, so open windows and waiting predictions restart once at this upgrade

Revision ID: 1a7f4c9e2d36
Revises: 8e5b3f0c6a21
Create Date: 2026-12-05 10:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "1a7f4c9e2d36"
down_revision: str | None = "8e5b3f0c6a21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM drift_window_states")
    op.execute("DELETE FROM drift_join_log")


def downgrade() -> None:
    op.execute("DELETE FROM drift_window_states")
    op.execute("DELETE FROM drift_join_log")
