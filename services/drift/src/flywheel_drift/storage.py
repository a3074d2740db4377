"""The detector's state: checkpoints per partition, alerts, and the monitor configs set
over gRPC.

Checkpoints (how far each partition was applied, its open windows and label join) are
written in one transaction per batch together with the events the batch produced (outbox),
so a detector killed at any point, or a partition handed to another replica, resumes
exactly where its last batch left off: events at or before a checkpointed offset are
skipped, later ones are applied once. A partition's owner epoch fences the replica that
held it before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
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
from flywheel_common.db import ROW_ID, Base, insert_unless_present, upsert
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_drift import checkpoints
from flywheel_drift.detection import Kind, Severity
from flywheel_drift.domain import Alert
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
    partition: Mapped[int] = mapped_column(Integer, index=True)
    """The partition whose predictions carry the model (and whose owner keeps this row)."""
    state: Mapped[bytes] = mapped_column(LargeBinary)
    """The version's open window, prediction baseline and change detector (see snapshots)."""
    status: Mapped[bytes] = mapped_column(LargeBinary)
    """Its VersionDriftStatus, read by every replica's GetDriftStatus."""


class JoinLogRow(Base):
    """A partition's label join as a changelog: each checkpoint appends what started or
    stopped waiting; a base row holds the whole join, and the rows before it are deleted."""

    __tablename__ = "drift_join_log"
    __table_args__ = (Index("ix_drift_join_log_partition_seq", "partition", "seq"),)

    seq: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    partition: Mapped[int] = mapped_column(Integer)
    base: Mapped[bool] = mapped_column(Boolean)
    changes: Mapped[bytes] = mapped_column(LargeBinary)


class PartitionOwnerRow(Base):
    """Who holds a partition's state: a replica claims it on assignment by moving `epoch`
    on, and checkpoints only while the epoch is still the one it claimed."""

    __tablename__ = "drift_partition_owners"

    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(256))


class AlertRow(Base):
    __tablename__ = "drift_alerts"
    __table_args__ = (Index("ix_drift_alerts_model", "model", "seq"),)

    seq: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(256), unique=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    kinds: Mapped[int] = mapped_column(Integer)
    """The alert's kinds as bits (see `kind_bits`)."""
    severity: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[float] = mapped_column(Float)
    alert: Mapped[bytes] = mapped_column(LargeBinary)
    """The DriftAlert message."""


@dataclass(frozen=True)
class PartitionState:
    """What a partition's new owner resumes from."""

    offsets: dict[str, int]
    """The last offset applied, by topic."""
    windows: dict[tuple[str, int], bytes]
    join_log: list[JoinChanges]
    """The join's changes since its last base, oldest first, the base first."""


@dataclass(frozen=True)
class Checkpoint:
    """One partition's share of a checkpoint transaction."""

    partition: int
    offsets: dict[str, int]
    """The last offset applied by the batch, by topic."""
    windows: dict[tuple[str, int], tuple[bytes, bytes]]
    """The changed versions' state and status."""
    join: JoinChanges
    join_is_base: bool
    alerts: list[tuple[Alert, bytes]]
    """The alerts raised, with their DriftAlert message."""

    @property
    def is_empty(self) -> bool:
        return not (self.offsets or self.windows or self.join or self.join_is_base or self.alerts)


async def claim(
    session: AsyncSession, partition: int, owner: str, held_epoch: int | None = None
) -> tuple[int, bool]:
    """Take a partition over: its epoch moves on, so an earlier owner can no longer
    checkpoint it. Returns the new epoch, and whether the partition's epoch was still
    `held_epoch` (this owner's, from before a rebalance: nobody claimed it in between)."""
    current = await session.scalar(
        select(PartitionOwnerRow.epoch)
        .where(PartitionOwnerRow.partition == partition)
        .with_for_update()
    )
    await upsert(
        session,
        PartitionOwnerRow,
        [{"partition": partition, "epoch": 1, "owner": owner}],
        ["partition"],
        lambda new: {"epoch": PartitionOwnerRow.epoch + 1, "owner": new.owner},
    )
    epoch = await session.scalar(
        select(PartitionOwnerRow.epoch).where(PartitionOwnerRow.partition == partition)
    )
    assert epoch is not None
    return epoch, held_epoch is not None and current == held_epoch


async def lost(session: AsyncSession, epochs: dict[int, int]) -> set[int]:
    """The partitions among `epochs` (partition: epoch claimed) that another replica has
    claimed since. Their rows stay locked until the transaction ends, so a claim cannot
    slip in between this check and the checkpoint's commit."""
    if not epochs:
        return set()
    rows = await session.execute(
        select(PartitionOwnerRow.partition, PartitionOwnerRow.epoch)
        .where(PartitionOwnerRow.partition.in_(epochs))
        .with_for_update()
    )
    current = {partition: epoch for partition, epoch in rows}
    return {p for p, epoch in epochs.items() if current.get(p) != epoch}


async def applied(
    session: AsyncSession, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The last offset applied of those (topic, partition) pairs that have one."""
    wanted = set(partitions)
    rows = await session.execute(
        select(OffsetRow.topic, OffsetRow.partition, OffsetRow.offset).where(
            OffsetRow.partition.in_({partition for _, partition in wanted})
        )
    )
    return {(t, p): offset for t, p, offset in rows if (t, p) in wanted}


async def advance(session: AsyncSession, offsets: dict[tuple[str, int], int]) -> None:
    """Record offsets as applied; an offset only moves forward."""
    await upsert(
        session,
        OffsetRow,
        [{"topic": t, "partition": p, "offset": offset} for (t, p), offset in offsets.items()],
        ["topic", "partition"],
        lambda new: {
            "offset": case((new.offset > OffsetRow.offset, new.offset), else_=OffsetRow.offset)
        },
    )


async def load(session: AsyncSession, partition: int) -> PartitionState:
    offsets = await session.execute(
        select(OffsetRow.topic, OffsetRow.offset).where(OffsetRow.partition == partition)
    )
    windows = await session.execute(
        select(WindowStateRow.model, WindowStateRow.version, WindowStateRow.state).where(
            WindowStateRow.partition == partition
        )
    )
    newest_base = (
        select(func.max(JoinLogRow.seq))
        .where(JoinLogRow.partition == partition, JoinLogRow.base)
        .scalar_subquery()
    )
    join = await session.execute(
        select(JoinLogRow.changes)
        .where(JoinLogRow.partition == partition, JoinLogRow.seq >= func.coalesce(newest_base, 0))
        .order_by(JoinLogRow.seq)
    )
    return PartitionState(
        offsets={topic: offset for topic, offset in offsets},
        windows={(model, version): state for model, version, state in windows},
        join_log=[_decode_join(changes) for changes in join.scalars()],
    )


async def save(session: AsyncSession, checkpoints: list[Checkpoint], alerts_kept: int) -> None:
    """A few statements whatever the batch held: this runs once per batch of the stream."""
    await advance(
        session,
        {(topic, c.partition): offset for c in checkpoints for topic, offset in c.offsets.items()},
    )
    await upsert(
        session,
        WindowStateRow,
        [
            {"model": m, "version": v, "partition": c.partition, "state": state, "status": status}
            for c in checkpoints
            for (m, v), (state, status) in c.windows.items()
        ],
        ["model", "version"],
    )
    for checkpoint in checkpoints:
        await _save_join(session, checkpoint)
    await _save_alerts(session, [alert for c in checkpoints for alert in c.alerts], alerts_kept)


async def _save_join(session: AsyncSession, checkpoint: Checkpoint) -> None:
    join, base = checkpoint.join, checkpoint.join_is_base
    if not join and not base:
        return
    row = JoinLogRow(partition=checkpoint.partition, base=base, changes=_encode_join(join))
    session.add(row)
    if base:
        await session.flush()
        await session.execute(
            delete(JoinLogRow).where(
                JoinLogRow.partition == checkpoint.partition, JoinLogRow.seq < row.seq
            )
        )


async def _save_alerts(session: AsyncSession, alerts: list[tuple[Alert, bytes]], kept: int) -> None:
    """Alerts once each by id (a replayed window raises the same id), the newest `kept`."""
    if not alerts:
        return
    for alert, message in alerts:
        await insert_unless_present(
            session,
            AlertRow,
            {
                "alert_id": alert.alert_id,
                "model": alert.model,
                "version": alert.version,
                "kinds": kind_bits(alert.kinds),
                "severity": int(alert.severity),
                "occurred_at": alert.occurred_at,
                "alert": message,
            },
            ["alert_id"],
        )
    oldest_kept = await session.scalar(
        select(AlertRow.seq).order_by(AlertRow.seq.desc()).offset(kept - 1).limit(1)
    )
    if oldest_kept is not None:
        await session.execute(delete(AlertRow).where(AlertRow.seq < oldest_kept))


def kind_bits(kinds: Iterable[Kind]) -> int:
    return sum(_KIND_BITS[kind] for kind in set(kinds))


_KIND_BITS = {Kind.DATA: 1, Kind.PREDICTION: 2, Kind.QUALITY: 4, Kind.CONCEPT: 8}
"""Stored in `drift_alerts.kinds`: never renumber."""


async def statuses(session: AsyncSession, model: str, version: int = 0) -> list[bytes]:
    """The VersionDriftStatus of the model's versions (of `version` only, when not 0)."""
    query = select(WindowStateRow.status).where(WindowStateRow.model == model)
    if version:
        query = query.where(WindowStateRow.version == version)
    return list((await session.execute(query.order_by(WindowStateRow.version))).scalars())


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to list; an empty or zero criterion matches all."""

    model: str = ""
    version: int = 0
    kinds: frozenset[Kind] | None = None
    """Alerts of any of these kinds (None: any kind)."""
    min_severity: Severity = Severity.NONE
    start: float = 0.0
    end: float = 0.0
    """Raised within [start, end)."""


async def alerts(
    session: AsyncSession, matching: AlertFilter, offset: int, limit: int
) -> tuple[list[bytes], bool]:
    """A page of the DriftAlert messages that match, newest first, and whether more follow."""
    query = select(AlertRow.alert).where(AlertRow.severity >= int(matching.min_severity))
    if matching.model:
        query = query.where(AlertRow.model == matching.model)
    if matching.version:
        query = query.where(AlertRow.version == matching.version)
    if matching.kinds is not None:
        query = query.where(AlertRow.kinds.op("&")(kind_bits(matching.kinds)) != 0)
    if matching.start:
        query = query.where(AlertRow.occurred_at >= matching.start)
    if matching.end:
        query = query.where(AlertRow.occurred_at < matching.end)
    rows = await session.execute(
        query.order_by(AlertRow.seq.desc()).offset(offset).limit(limit + 1)
    )
    page = list(rows.scalars())
    return page[:limit], len(page) > limit


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
                "confidence": np.fromiter(
                    (
                        math.nan if pending.confidence is None else pending.confidence
                        for pending in predictions.values()
                    ),
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
    received_at = predictions["received_at"].tolist()
    # Changelogs written before predictions carried their confidence have none.
    confidence = [
        c if math.isfinite(c) else None
        for c in predictions.get("confidence", np.full(len(received_at), np.nan)).tolist()
    ]
    return JoinChanges(
        predictions={
            request_id: Pending(model, version, prediction, at, confident)
            for request_id, model, version, prediction, at, confident in zip(
                predictions["request_ids"],
                predictions["models"],
                predictions["versions"].tolist(),
                predictions["predicted"],
                received_at,
                confidence,
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
