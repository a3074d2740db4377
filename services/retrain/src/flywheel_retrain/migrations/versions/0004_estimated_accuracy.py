"""estimated accuracy: metric windows keep the accuracy expected before labels (CBPE)

Revision ID: 5d8e2f61a7c3
Revises: baf5c1fa2302
Create Date: 2026-12-06 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d8e2f61a7c3"
down_revision: str | None = "baf5c1fa2302"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "retrain_metric_windows", sa.Column("estimated_accuracy", sa.Float(), nullable=True)
    )
    op.add_column(
        "retrain_metric_windows",
        sa.Column("estimated_count", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("retrain_metric_windows", "estimated_count")
    op.drop_column("retrain_metric_windows", "estimated_accuracy")
