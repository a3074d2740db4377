"""The detector's state: checkpoints and the monitor configs set over gRPC.

Checkpoints (how far each partition was applied, the open windows) are written in one
transaction per batch together with the events the batch produced (outbox), so a detector
killed at any point restarts exactly where its last batch left off: events at or before a
checkpointed offset are skipped, later ones are applied once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, LargeBinary, String, case, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import Base, upsert


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
    """The version's open window, prediction baseline and change detector (see engine)."""


async def offsets(session: AsyncSession) -> dict[tuple[str, int], int]:
    rows = (await session.execute(select(OffsetRow))).scalars()
    return {(row.topic, row.partition): row.offset for row in rows}


async def window_states(session: AsyncSession) -> dict[tuple[str, int], bytes]:
    rows = (await session.execute(select(WindowStateRow))).scalars()
    return {(row.model, row.version): row.state for row in rows}


async def save(
    session: AsyncSession,
    applied: dict[tuple[str, int], int],
    states: dict[tuple[str, int], bytes],
) -> None:
    """Two statements whatever the batch held: this runs once per batch of the stream."""
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


class MonitorConfigRow(Base):
    __tablename__ = "monitor_configs"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The MonitorConfig message in its JSON form."""
    revision: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


async def monitor_configs(session: AsyncSession) -> list[MonitorConfigRow]:
    return list((await session.execute(select(MonitorConfigRow))).scalars())
