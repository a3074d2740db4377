"""Versioned per-model policies on SQLite and PostgreSQL: revisions, stamps, compare-and-set."""

from datetime import UTC, datetime

import pytest

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.db import Base, Database
from flywheel_common.errors import FailedPrecondition
from flywheel_common.policies import PolicyColumns, PolicyRepository


class ExamplePolicyRow(PolicyColumns, Base):
    __tablename__ = "test_policies"


POLICIES = PolicyRepository(ExamplePolicyRow, pb.DeploymentPolicy, "example policy")
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
TUESDAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def test_each_change_is_the_next_revision_stamped_with_who_and_when(
    database: Database,
) -> None:
    async with database.transaction() as session:
        assert await POLICIES.get(session, "iris") is None
        first = await POLICIES.put(
            session,
            pb.DeploymentPolicy(model="iris", strategy=pb.STRATEGY_CANARY),
            expected_revision=0,
            actor="alice",
            at=MONDAY,
        )
    async with database.transaction() as session:
        second = await POLICIES.put(
            session,
            pb.DeploymentPolicy(model="iris", strategy=pb.STRATEGY_DIRECT),
            expected_revision=None,  # last writer wins when the caller does not say
            actor="bob",
            at=TUESDAY,
        )
    async with database.transaction() as session:
        stored = await POLICIES.get(session, "iris")
        every = await POLICIES.every(session)

    assert (first.revision, first.updated_by) == (1, "alice")
    assert first.updated_at.ToDatetime(UTC) == MONDAY
    assert stored == second
    assert (stored.revision, stored.updated_by, stored.strategy) == (2, "bob", pb.STRATEGY_DIRECT)
    assert stored.updated_at.ToDatetime(UTC) == TUESDAY
    assert [policy.model for policy in every] == ["iris"]


async def test_a_stale_expected_revision_is_refused_and_changes_nothing(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await POLICIES.put(session, pb.DeploymentPolicy(model="iris"), None, "alice", MONDAY)
    with pytest.raises(FailedPrecondition) as refused:
        async with database.transaction() as session:
            await POLICIES.put(
                session,
                pb.DeploymentPolicy(model="iris", strategy=pb.STRATEGY_SHADOW),
                expected_revision=0,
                actor="bob",
                at=TUESDAY,
            )
    async with database.transaction() as session:
        stored = await POLICIES.get(session, "iris")

    assert str(refused.value) == (
        "the example policy of 'iris' is at revision 1, not 0; read it again and retry"
    )
    assert stored is not None
    assert (stored.revision, stored.updated_by, stored.strategy) == (
        1,
        "alice",
        pb.STRATEGY_UNSPECIFIED,
    )
