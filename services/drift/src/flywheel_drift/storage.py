"""The detector's state: checkpoints and the monitor configs set over gRPC.

Checkpoints (how far each partition was applied, the open windows) are written in one
transaction per batch together with the events the batch produced (outbox), so a detector
killed at any point restarts exactly where its last batch left off: events at or before a
checkpointed offset are skipped, later ones are applied once.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    LargeBinary,
    String,
    case,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel.drift.v1 import types_pb2 as types
from flywheel_common.db import ROW_ID, Base, upsert
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_drift import checkpoints
from flywheel_drift.windows import JoinChanges, Pending, WaitingLabel


class OffsetRow(Base):
    __tablename__ = "drift_offsets"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    """The last offset applied."""


class WindowStateRow(Base):
    __tablename__ = "drift_window_states"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    """The version's open window, prediction baseline and change detector (see handlers)."""


class JoinLogRow(Base):
    """The label join's changelog: each checkpoint appends what started or stopped waiting;
    a base row holds the whole join, and rows before it are deleted."""

    __tablename__ = "drift_join_log"

    seq: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    base: Mapped[bool] = mapped_column(Boolean)
    changes: Mapped[bytes] = mapped_column(LargeBinary)


async def offsets(session: AsyncSession) -> dict[tuple[str, int], int]:
    rows = (await session.execute(select(OffsetRow))).scalars()
    return {(row.topic, row.partition): row.offset for row in rows}


async def window_states(session: AsyncSession) -> dict[tuple[str, int], bytes]:
    rows = (await session.execute(select(WindowStateRow))).scalars()
    return {(row.model, row.version): row.state for row in rows}


async def join_log(session: AsyncSession) -> list[JoinChanges]:
    """The join's changes since its last base, oldest first, the base first."""
    newest_base = select(func.max(JoinLogRow.seq)).where(JoinLogRow.base).scalar_subquery()
    rows = await session.execute(
        select(JoinLogRow.changes)
        .where(JoinLogRow.seq >= func.coalesce(newest_base, 0))
        .order_by(JoinLogRow.seq)
    )
    return [_decode_join(changes) for changes in rows.scalars()]


async def save(
    session: AsyncSession,
    applied: dict[tuple[str, int], int],
    states: dict[tuple[str, int], bytes],
    join: JoinChanges,
    join_is_base: bool = False,
) -> None:
    """A few statements whatever the batch held: this runs once per batch of the stream.
    `join` is what changed in the label join, or, when `join_is_base`, all of it: then the
    log before it is deleted."""
    await upsert(
        session,
        OffsetRow,
        [{"topic": t, "partition": p, "offset": offset} for (t, p), offset in applied.items()],
        ["topic", "partition"],
        # An offset only moves forward, whichever replica wrote last.
        lambda new: {
            "offset": case((new.offset > OffsetRow.offset, new.offset), else_=OffsetRow.offset)
        },
    )
    await upsert(
        session,
        WindowStateRow,
        [{"model": m, "version": v, "state": state} for (m, v), state in states.items()],
        ["model", "version"],
    )
    await _save_join(session, join, join_is_base)


async def _save_join(session: AsyncSession, join: JoinChanges, base: bool) -> None:
    if not join and not base:
        return
    row = JoinLogRow(base=base, changes=_encode_join(join))
    session.add(row)
    if base:
        await session.flush()
        await session.execute(delete(JoinLogRow).where(JoinLogRow.seq < row.seq))


def _encode_join(join: JoinChanges) -> bytes:
    # Column by column: a checkpoint writes thousands of entries, and a numeric column is
    # one array rather than thousands of JSON numbers.
    predictions, labels = join.predictions, join.labels
    return checkpoints.encode(
        {
            "predictions": {
                "request_ids": list(predictions),
                "models": [pending.model for pending in predictions.values()],
                "versions": np.fromiter(
                    (pending.version for pending in predictions.values()),
                    np.int64,
                    len(predictions),
                ),
                "predicted": [pending.prediction for pending in predictions.values()],
                "received_at": np.fromiter(
                    (pending.received_at for pending in predictions.values()),
                    np.float64,
                    len(predictions),
                ),
                "gone": list(join.predictions_gone),
            },
            "labels": {
                "request_ids": list(labels),
                "labels": [waiting.label for waiting in labels.values()],
                "arrived_at": np.fromiter(
                    (waiting.arrived_at for waiting in labels.values()), np.float64, len(labels)
                ),
                "gone": list(join.labels_gone),
            },
        }
    )


def _decode_join(data: bytes) -> JoinChanges:
    document = checkpoints.decode(data)
    predictions, labels = document["predictions"], document["labels"]
    return JoinChanges(
        predictions={
            request_id: Pending(model, version, prediction, at)
            for request_id, model, version, prediction, at in zip(
                predictions["request_ids"],
                predictions["models"],
                predictions["versions"].tolist(),
                predictions["predicted"],
                predictions["received_at"].tolist(),
                strict=True,
            )
        },
        predictions_gone=set(predictions["gone"]),
        labels={
            request_id: WaitingLabel(label, at)
            for request_id, label, at in zip(
                labels["request_ids"], labels["labels"], labels["arrived_at"].tolist(), strict=True
            )
        },
        labels_gone=set(labels["gone"]),
    )


class MonitorConfigRow(PolicyColumns, Base):
    __tablename__ = "monitor_configs"


MONITOR_CONFIGS = PolicyRepository(MonitorConfigRow, types.MonitorConfig, "monitor config")
