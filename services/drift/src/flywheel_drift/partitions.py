"""A partition of the drift stream as one replica holds it: the detector of the models whose
predictions the partition carries, how far each of its topics was applied, and the epoch
this replica claimed it at.

Predictions and ground truth by model are co-partitioned (same key, same partition count),
so partition p of both holds everything a model's windows and label join need: a partition
is the unit a replica takes over and hands on, and its state moves with it through the
database (`storage.load`, `Partition.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from flywheel_drift import converters, snapshots
from flywheel_drift.domain import Alert, DriftEvent, DriftStatus
from flywheel_drift.handlers import Detector
from flywheel_drift.storage import Checkpoint, PartitionState
from flywheel_drift.windows import JoinChanges


class Consumed(Protocol):
    """A consumed Kafka record, as far as checkpoints need it."""

    @property
    def topic(self) -> str: ...
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Consumed)

MIN_JOIN_LOG_ENTRIES = 100_000
"""A label join's log is compacted into a base no sooner than this many entries."""


class Partition:
    def __init__(self, number: int, epoch: int, detector: Detector) -> None:
        self.number = number
        self.epoch = epoch
        self.detector = detector
        self._applied: dict[str, int] = {}
        """The last offset applied, by topic."""
        self._join_logged = 0
        """Label-join entries in the checkpoint log since its last base."""

    @classmethod
    def resumed(
        cls, number: int, epoch: int, detector: Detector, state: PartitionState
    ) -> Partition:
        """The partition as its last checkpoint left it."""
        partition = cls(number, epoch, detector)
        partition._applied = dict(state.offsets)
        for (model, version), snapshot in state.windows.items():
            detector.restore(model, version, snapshots.decode(model, version, snapshot))
        for changes in state.join_log:
            detector.join.apply(changes)
            partition._join_logged += len(changes)
        detector.changed.clear()
        return partition

    def unapplied(self, records: Sequence[R]) -> list[R]:
        """Records after the checkpoint: a redelivery is applied only once."""
        return [record for record in records if record.offset > self._applied.get(record.topic, -1)]

    def checkpoint(self, records: Sequence[Consumed], outgoing: Sequence[DriftEvent]) -> Checkpoint:
        """What to write of the partition after the detector took `records` and produced
        `outgoing`: taken at once, with no await since, so it holds exactly those batches."""
        offsets: dict[str, int] = {}
        for record in records:
            offsets[record.topic] = max(offsets.get(record.topic, -1), record.offset)
        changed, self.detector.changed = self.detector.changed, set()
        windows = {key: self._window_state(*key) for key in changed}
        join, join_is_base = self._join_changes()
        return Checkpoint(
            partition=self.number,
            offsets=offsets,
            windows=windows,
            join=join,
            join_is_base=join_is_base,
            alerts=[
                (event, converters.alert_message(event).SerializeToString())
                for event in outgoing
                if isinstance(event, Alert)
            ],
        )

    def _window_state(self, model: str, version: int) -> tuple[bytes, bytes]:
        snapshot = self.detector.snapshot(model, version)
        status = converters.status_message(snapshot.status).SerializeToString()
        return snapshots.encode(snapshot, status), status

    def committed(self, checkpoint: Checkpoint) -> None:
        for topic, offset in checkpoint.offsets.items():
            self._applied[topic] = max(self._applied.get(topic, -1), offset)

    def _join_changes(self) -> tuple[JoinChanges, bool]:
        """What to log of the label join: its changes, or all of it once the changes logged
        since the last base outnumber twice what it holds (the log stays within three
        times the join, and a take-over replays at most that)."""
        join = self.detector.join
        changes = join.changes()
        self._join_logged += len(changes)
        if self._join_logged <= max(2 * join.size, MIN_JOIN_LOG_ENTRIES):
            return changes, False
        self._join_logged = 0
        return join.everything(), True


class Partitions:
    """The partitions this replica holds now, by number."""

    def __init__(self, new_detector: Callable[[], Detector]) -> None:
        self.new_detector = new_detector
        self._held: dict[int, Partition] = {}

    def __contains__(self, number: int) -> bool:
        return number in self._held

    def __getitem__(self, number: int) -> Partition:
        return self._held[number]

    def get(self, number: int) -> Partition | None:
        return self._held.get(number)

    def __iter__(self) -> Iterator[Partition]:
        return iter(list(self._held.values()))

    def hold(self, partition: Partition) -> None:
        self._held[partition.number] = partition

    def drop(self, number: int, held: Partition | None = None) -> None:
        """Forget a partition (only if it is still `held`, when given)."""
        if held is None or self._held.get(number) is held:
            self._held.pop(number, None)

    def numbers(self) -> set[int]:
        return set(self._held)

    def every_status(self) -> Iterator[DriftStatus]:
        """The status of every version this replica watches (for the gauges)."""
        for partition in self:
            yield from partition.detector.every_status()
