import os
from pathlib import Path

import pytest

from flywheel_common.events import OutgoingRecord
from flywheel_gateway import journal as journal_module
from flywheel_gateway.journal import HEADER_BYTES, Journal, JournalInUse
from flywheel_gateway.routing import Route, RoutingTable


def record(n: int) -> OutgoingRecord:
    return OutgoingRecord(
        topic="flywheel.predictions",
        key=b"iris",
        value=f"payload-{n}".encode(),
        headers=[("ce_id", f"id-{n}".encode()), ("content-type", b"application/protobuf")],
    )


def test_journal_keeps_what_was_not_delivered_across_reopening(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", max_bytes=10_000)
    ends = journal.append([record(1), record(2)])
    journal.append([record(3)])
    journal.delivered(ends[0])
    journal.close()  # killed: the operating system releases its lock, nothing else
    reopened = Journal(tmp_path / "j", max_bytes=10_000)
    assert list(reopened.records()) == [record(2), record(3)]
    assert [r for r, _ in reopened.read(reopened.start, limit=1)] == [record(2)]
    reopened.delivered(reopened.end)
    assert reopened.empty
    assert reopened.size_bytes == HEADER_BYTES  # nothing left to keep
    reopened.close()
    assert Journal(tmp_path / "j", max_bytes=10_000).empty


def test_journal_is_bounded_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", max_bytes=300)
    written = len(journal.append([record(n) for n in range(10)]))
    assert 0 < written < 10
    assert journal.size_bytes <= 300
    journal.close()
    with (tmp_path / "j").open("ab") as handle:
        handle.write(b"\x50\x00\x00\x00partial")  # killed mid-write
    reopened = Journal(tmp_path / "j", 10_000)
    reopened.append([record(99)])
    assert list(reopened.records()) == [*(record(n) for n in range(written)), record(99)]


def test_a_second_journal_on_the_same_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    """Two gateways sharing a data directory would each send the other's records."""
    first = Journal(tmp_path / "j", max_bytes=10_000)
    first.append([record(1)])
    refusal = rf"{tmp_path / 'j'} is open in another gateway \(process {os.getpid()}\)"
    with pytest.raises(JournalInUse, match=refusal + ": give each gateway a data directory"):
        Journal(tmp_path / "j", max_bytes=10_000)
    assert list(first.records()) == [record(1)]  # the refused one changed nothing
    first.close()
    assert list(Journal(tmp_path / "j", max_bytes=10_000).records()) == [record(1)]


def test_delivered_records_make_room_and_positions_survive_the_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 200)
    journal = Journal(tmp_path / "j", max_bytes=700)  # six records fit
    ends = journal.append([record(n) for n in range(6)])
    assert len(ends) == 6
    journal.delivered(ends[2])  # a head past COMPACT_BYTES: rewritten without it
    assert journal.size_bytes < ends[-1]
    assert [r for r, _ in journal.read(ends[3], limit=10)] == [record(4), record(5)]
    journal.delivered(ends[4])
    assert list(journal.records()) == [record(5)]
    assert len(journal.append([record(n) for n in range(6, 12)])) == 5  # room again


def table(*routes: Route, sticky: str = "k") -> RoutingTable:
    return RoutingTable("iris", routes, sticky_key=sticky)


def test_weighted_pick_follows_the_weights() -> None:
    routes = table(Route(1, 70), Route(2, 30))
    picks = [routes.pick(None, i / 1000).version for i in range(1000)]
    assert picks.count(2) == 300


def test_sticky_keys_keep_their_route_and_spread_by_weight() -> None:
    routes = table(Route(1, 50), Route(2, 50))
    first = {key: routes.pick(f"user-{key}", 0.0).version for key in range(2000)}
    again = {key: routes.pick(f"user-{key}", 0.99).version for key in range(2000)}
    assert first == again
    assert 0.45 < sum(v == 2 for v in first.values()) / 2000 < 0.55
    # Shifting weight moves keys only toward the route that gained.
    shifted = table(Route(1, 30), Route(2, 70))
    moved = {key for key in range(2000) if shifted.pick(f"user-{key}", 0.0).version != first[key]}
    assert all(first[key] == 1 for key in moved)


def test_unready_versions_are_skipped_and_none_ready_is_an_error() -> None:
    routes = table(Route(1, 10), Route(2, 90))
    assert {routes.pick(None, d / 10, ready={1}).version for d in range(10)} == {1}
    with pytest.raises(LookupError):
        routes.pick(None, 0.5, ready=set())


def test_a_version_at_zero_percent_is_loaded_but_takes_no_traffic() -> None:
    table = RoutingTable("iris", (Route(1, 100), Route(2, 0)), shadow_version=3, shadow_percent=100)
    assert table.versions_to_load == {1, 2, 3}
    picks = {table.pick(None, draw / 100).version for draw in range(100)}
    picks |= {table.pick(f"user-{n}", 0.5).version for n in range(100)}
    assert picks == {1}
