"""monitor configs take the shape every policy table shares

Revision ID: 8e5b3f0c6a21
Revises: bfbff9afe33b
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e5b3f0c6a21"
down_revision: str | None = "bfbff9afe33b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_configs") as batch:
        batch.alter_column("config", new_column_name="policy")
        batch.add_column(
            sa.Column("updated_by", sa.String(length=256), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("monitor_configs") as batch:
        batch.drop_column("updated_by")
        batch.alter_column("policy", new_column_name="config")
