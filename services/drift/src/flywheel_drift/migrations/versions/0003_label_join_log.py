"""label join log

Revision ID: bfbff9afe33b
Revises: 3d01653b2305
Create Date: 2026-12-04 14:46:06.740225
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bfbff9afe33b"
down_revision: str | None = "3d01653b2305"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_join_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("base", sa.Boolean(), nullable=False),
        sa.Column("changes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_drift_join_log")),
    )


def downgrade() -> None:
    op.drop_table("drift_join_log")
