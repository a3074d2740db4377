"""Per-model policies kept as protobuf documents, with revisions and compare-and-set.

The deployer's deployment policies, the retrain trigger's retrain policies and the drift
detector's monitor configs are the same thing: one document per model that operators read,
change and change again, guarded by `expected_revision` so two people editing at once never
silently overwrite each other. Each service declares its table with `PolicyColumns` and
keeps it through one `PolicyRepository`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import JSON, BigInteger, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import TIMESTAMP
from flywheel_common.errors import FailedPrecondition
from flywheel_common.timestamps import stored_utc


class PolicyColumns:
    """The one shape of every policy table (mixed into a service's declarative table)."""

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The policy message in its JSON form (field names as in the .proto)."""
    revision: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(256), default="")
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


# A policy message: it names its `model` and carries `revision`, `updated_by`, `updated_at`.
P = TypeVar("P", bound=Message)


class PolicyRepository(Generic[P]):
    """Reads and writes one service's policies inside the caller's transaction."""

    def __init__(self, table: type[PolicyColumns], message: type[P], noun: str) -> None:
        """`noun` names the policy in errors: "the {noun} of 'iris' is at revision 3"."""
        self._table = table
        self._message = message
        self._noun = noun

    def decode(self, document: dict[str, Any]) -> P:
        return json_format.ParseDict(document, self._message(), ignore_unknown_fields=True)

    @staticmethod
    def encode(policy: Message) -> dict[str, Any]:
        return json_format.MessageToDict(policy, preserving_proto_field_name=True)

    async def get(self, session: AsyncSession, model: str) -> P | None:
        row = await session.get(self._table, model)
        return None if row is None else self.decode(row.policy)

    async def every(self, session: AsyncSession) -> list[P]:
        rows = (await session.execute(select(self._table))).scalars()
        return [self.decode(row.policy) for row in rows]

    async def put(
        self,
        session: AsyncSession,
        policy: P,
        expected_revision: int | None,
        actor: str,
        at: datetime,
    ) -> P:
        """Store `policy` as the model's next revision, stamped with who and when; fails
        FAILED_PRECONDITION when `expected_revision` is given and is not the stored one."""
        model: str = getattr(policy, "model")  # noqa: B009  (the message type is generic)
        row = await session.get(self._table, model, with_for_update=True)
        current = row.revision if row is not None else 0
        if expected_revision is not None and expected_revision != current:
            raise FailedPrecondition(
                f"the {self._noun} of {model!r} is at revision {current}, not "
                f"{expected_revision}; read it again and retry"
            )
        stored = self._message()
        stored.CopyFrom(policy)
        stamped: Any = stored
        stamped.revision = current + 1
        stamped.updated_by = actor
        stamped.updated_at.FromDatetime(stored_utc(at))
        if row is None:
            row = self._table(model=model)  # type: ignore[call-arg]
            session.add(row)
        row.policy = self.encode(stored)
        row.revision = current + 1
        row.updated_by = actor
        row.updated_at = at
        return stored
