"""retrain policies take the shape every policy table shares: who changed it last

Revision ID: 4c2e7a1d9b05
Revises: 9abd97d3c318
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c2e7a1d9b05"
down_revision: str | None = "9abd97d3c318"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("retrain_policies") as batch:
        batch.add_column(
            sa.Column("updated_by", sa.String(length=256), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("retrain_policies") as batch:
        batch.drop_column("updated_by")
