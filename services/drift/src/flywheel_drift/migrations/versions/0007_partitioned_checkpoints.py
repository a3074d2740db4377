"""checkpoints per partition, so replicas hand partitions over on rebalance: window states
and the label-join log name their partition, each partition has an owner epoch that fences
a replica that lost it, and alerts and statuses are kept where every replica reads them.
Earlier window states and join logs belonged to no partition and are dropped, so open
windows and waiting predictions restart once at this upgrade (as at 0005)

Revision ID: 7c2e9a41b0d5
Revises: f5bdd6795d80
Create Date: 2026-12-06 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c2e9a41b0d5"
down_revision: str | None = "f5bdd6795d80"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("drift_window_states")
    op.drop_table("drift_join_log")
    op.create_table(
        "drift_window_states",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("model", "version", name=op.f("pk_drift_window_states")),
    )
    op.create_index(op.f("ix_drift_window_states_partition"), "drift_window_states", ["partition"])
    op.create_table(
        "drift_join_log",
        sa.Column("seq", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("base", sa.Boolean(), nullable=False),
        sa.Column("changes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_drift_join_log")),
    )
    op.create_index(op.f("ix_drift_join_log_partition_seq"), "drift_join_log", ["partition", "seq"])
    op.create_table(
        "drift_partition_owners",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_drift_partition_owners")),
    )
    op.create_table(
        "drift_alerts",
        sa.Column("seq", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kinds", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.Float(), nullable=False),
        sa.Column("alert", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_drift_alerts")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_drift_alerts_alert_id")),
    )
    op.create_index(op.f("ix_drift_alerts_model"), "drift_alerts", ["model", "seq"])


def downgrade() -> None:
    op.drop_table("drift_alerts")
    op.drop_table("drift_partition_owners")
    op.drop_table("drift_join_log")
    op.drop_table("drift_window_states")
    op.create_table(
        "drift_window_states",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("model", "version", name=op.f("pk_drift_window_states")),
    )
    op.create_table(
        "drift_join_log",
        sa.Column("seq", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("base", sa.Boolean(), nullable=False),
        sa.Column("changes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_drift_join_log")),
    )
