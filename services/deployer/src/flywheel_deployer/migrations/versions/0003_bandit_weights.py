"""rollouts.arm_weights: a bandit's arms' weights, which its reward moves

Revision ID: 5d2f8b1c7a90
Revises: 076696adc6d6
Create Date: 2026-12-07 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2f8b1c7a90"
down_revision: str | None = "076696adc6d6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rollouts", sa.Column("arm_weights", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("rollouts", "arm_weights")
