"""What the platform published about one model, read back from its topics, and the rules
it must obey after a chaos run: each prediction logged once, each metric window published
once, each registration and promotion announced once."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from flywheel.drift.v1.events_pb2 import ModelMetricsWindow
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel.registry.v1.events_pb2 import ModelVersionPromoted, ModelVersionRegistered
from flywheel_common.events import Envelope, EventTypes, decode_event
from flywheel_common.prediction_logs import unpack
from flywheel_common.topics import MODEL_EVENTS, MODEL_METRICS, PREDICTIONS, TopicSpec
from flywheel_testing.kafka import read_topic

LOGICAL_EVENTS = (ModelVersionRegistered, ModelVersionPromoted)
"""Events of which each (type, version) must be announced by one event id."""


async def events_of(bootstrap: str, topic: TopicSpec, model: str) -> list[Envelope]:
    """Every event on `topic` under the model's key, decoded, duplicates included."""
    records = await read_topic(
        bootstrap, topic.name, at_least=0, partitions=topic.partitions, timeout_ms=30_000
    )
    types = EventTypes.flywheel()
    return [
        decode_event(record.headers, record.value, types)
        for record in records
        if record.key == model.encode() and record.value is not None
    ]


@dataclass(frozen=True)
class Ledger:
    logs: list[PredictionLog]
    windows: list[tuple[str, ModelMetricsWindow]]
    """(ce_id, window), duplicates included."""
    events: list[Envelope]
    """flywheel.model-events of the model, duplicates included."""

    @classmethod
    async def read(cls, bootstrap: str, model: str) -> Ledger:
        predictions = await events_of(bootstrap, PREDICTIONS, model)
        windows = await events_of(bootstrap, MODEL_METRICS, model)
        return cls(
            logs=[log for envelope in predictions for log in unpack(envelope.message)],
            windows=[
                (envelope.id, envelope.message)
                for envelope in windows
                if isinstance(envelope.message, ModelMetricsWindow)
            ],
            events=await events_of(bootstrap, MODEL_EVENTS, model),
        )

    def logs_per_request(self) -> Counter[str]:
        return Counter(log.request_id for log in self.logs if not log.shadow)

    def logs_per_version(self) -> Counter[int]:
        return Counter(int(log.version) for log in self.logs)

    def window_ids(self) -> dict[tuple[int, int], set[str]]:
        """The event ids of each (version, window index)."""
        found: dict[tuple[int, int], set[str]] = defaultdict(set)
        for ce_id, window in self.windows:
            found[(int(window.version), int(window.window.index))].add(ce_id)
        return found

    def event_ids(self) -> dict[tuple[str, int], set[str]]:
        """The event ids of each registration and promotion, by (type, version)."""
        found: dict[tuple[str, int], set[str]] = defaultdict(set)
        for envelope in self.events:
            if isinstance(envelope.message, LOGICAL_EVENTS):
                version = int(envelope.message.version)
                found[(type(envelope.message).__name__, version)].add(envelope.id)
        return found


def log_problems(
    ledger: Ledger, answered: Iterable[str], sent: set[str], retried: set[str]
) -> list[str]:
    """Requests whose logs are not there exactly once. A request in `retried` (in flight on
    a killed gateway) may have run there as well, or not at all."""
    counts = ledger.logs_per_request()
    problems = [
        f"request {request_id}: {counts[request_id]} logs"
        for request_id in answered
        if counts[request_id] != 1 and not (request_id in retried and counts[request_id] <= 2)
    ]
    problems += [
        f"request {rid}: {counts[rid]} logs of a request never answered"
        for rid in (set(counts) - set(answered) - retried)
    ]
    problems += [f"a log of request {rid}, which nobody sent" for rid in set(counts) - sent]
    return problems


def window_problems(ledger: Ledger, size: int) -> list[str]:
    """Windows published more or less than once, or not counting every log exactly once."""
    ids = ledger.window_ids()
    problems = [
        f"v{version} window {index}: {len(events)} event ids"
        for (version, index), events in sorted(ids.items())
        if len(events) != 1
    ]
    unique = {ce_id: window for ce_id, window in ledger.windows}
    problems += [
        f"v{window.version} window {window.window.index}: {window.request_count} predictions"
        for window in unique.values()
        if window.request_count != size
    ]
    for version, logged in sorted(ledger.logs_per_version().items()):
        indices = sorted(index for v, index in ids if v == version)
        if indices != list(range(logged // size)):
            problems.append(
                f"v{version}: {logged} logs make {logged // size} windows of {size}, "
                f"published {indices}"
            )
    return problems


def event_problems(ledger: Ledger, versions: Iterable[int]) -> list[str]:
    """Registrations and promotions of `versions` not announced by exactly one event id."""
    ids = ledger.event_ids()
    return [
        f"{kind.__name__} of v{version}: {len(ids[(kind.__name__, version)])} event ids"
        for version in versions
        for kind in LOGICAL_EVENTS
        if len(ids[(kind.__name__, version)]) != 1
    ]
