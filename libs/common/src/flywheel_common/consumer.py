"""The consumer loop: decode, handle with bounded retries, dead-letter, commit after the effect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from flywheel_common import errors
from flywheel_common.dead_letters import DeadLetters, RecordSender
from flywheel_common.events import Envelope, EventTypes, MalformedEvent, decode_event
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import await_group_coordinator

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_meter = metrics.get_meter(__name__)
_handled = _meter.create_counter("flywheel.events.handled", description="Events handled")

Handler = Callable[[Envelope], Awaitable[None]]

# Errors that say the event itself is wrong: retrying cannot help.
_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.FailedPrecondition,
    errors.PermissionDenied,
    errors.ResourceExhausted,
)


def is_retryable(exc: BaseException) -> bool:
    return not isinstance(exc, _PERMANENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Handler attempts per record before it goes to the dead-letter topic."""
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0
    retryable: Callable[[BaseException], bool] = is_retryable


class _AssignmentSignal(ConsumerRebalanceListener):  # type: ignore[misc]
    """Sets an event once the group has given this consumer partitions."""

    def __init__(self, assigned: asyncio.Event) -> None:
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        if assigned:
            self._assigned.set()


class EventConsumer:
    """Runs a handler over every event of some topics, in a consumer group.

    Offsets are committed only after the handler returned (or the record was dead-lettered),
    so a crash re-delivers at most the records that were in flight; handlers that must apply
    an event once dedupe on `ce_id` (see `flywheel_common.inbox`).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        dead_letters: RecordSender,
        types: EventTypes | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_batch: int = 500,
        from_beginning: bool = True,
    ) -> None:
        self._group_id = group_id
        self._kafka = settings
        self._handler = handler
        self._dead_letters = DeadLetters(dead_letters, group_id)
        self._types = types or EventTypes.flywheel()
        self._retry = retry
        self._max_batch = max_batch
        self._topics = list(topics)
        self._assigned = asyncio.Event()
        consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            client_id=settings.client_id or group_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            isolation_level="read_committed",
        )
        # Subscribed before start, as topics given to the constructor would be, with a
        # listener that tells when the group has assigned partitions.
        consumer.subscribe(self._topics, listener=_AssignmentSignal(self._assigned))
        self._consumer = consumer
        self._from_beginning = from_beginning
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        await await_group_coordinator(self._kafka, self._group_id)
        await self._consumer.start()
        if not self._from_beginning:
            await self._pin_start_positions()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self._group_id}")

    async def _pin_start_positions(self, timeout: float = 30.0) -> None:
        """A new group starting from the end: fix where "the end" is before start() returns,
        so every event published after start-up is seen (aiokafka resolves it lazily)."""
        try:
            async with asyncio.timeout(timeout):
                await self._assigned.wait()
                for partition in self._consumer.assignment():
                    await self._consumer.position(partition)
        except TimeoutError:
            log.warning(
                "no partitions assigned yet; starting without pinned positions",
                extra={"group": self._group_id},
            )

    async def stop(self) -> None:
        """Finish the record in hand, commit what is done, leave the group."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def wait(self) -> None:
        """Wait until the loop ends; re-raises the error that ended it."""
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_batch)
            for partition, records in batches.items():
                processed = succeeded = 0
                for record in records:
                    if self._stopping.is_set():
                        break
                    succeeded += await self._process(record)
                    processed += 1
                if processed:
                    await self._commit(partition, records[processed - 1].offset + 1)
                    _handled.add(succeeded, {"topic": partition.topic, "group": self._group_id})
                if self._stopping.is_set():
                    return

    async def _commit(self, partition: TopicPartition, next_offset: int) -> None:
        try:
            await self._consumer.commit({partition: next_offset})
        except CommitFailedError:
            # The partition moved to another member during the batch; it will re-deliver
            # from the last commit and idempotent handlers absorb the repeats.
            log.warning("commit lost to a rebalance", extra={"partition": str(partition)})

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle one record; False when it went to the dead-letter topic instead."""
        try:
            envelope = decode_event(record.headers or (), record.value, self._types, key=record.key)
        except MalformedEvent as exc:
            await self._dead_letters.send(record, f"undecodable: {exc}")
            return False
        with _tracer.start_as_current_span(
            f"{record.topic} process",
            context=envelope.trace_context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.message.id": envelope.id,
                "messaging.consumer.group.name": self._group_id,
                "messaging.kafka.offset": record.offset,
            },
        ):
            try:
                await self._handle_with_retries(envelope)
            except Exception as exc:
                log.exception("handler failed", extra={"ce_id": envelope.id})
                await self._dead_letters.send(
                    record, f"handler failed: {type(exc).__name__}: {exc}"
                )
                return False
        return True

    async def _handle_with_retries(self, envelope: Envelope) -> None:
        try:
            await self._handler(envelope)
            return
        except Exception as exc:
            if not self._retry.retryable(exc) or self._retry.attempts <= 1:
                raise
            log.warning("handler failed; retrying", extra={"ce_id": envelope.id, "error": str(exc)})
        # The first attempt failed: retry the rest with backoff (tenacity stays off the hot path).
        await asyncio.sleep(self._retry.initial_backoff_seconds)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts - 1),
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_backoff_seconds,
                jitter=self._retry.initial_backoff_seconds,
                max=self._retry.max_backoff_seconds,
            ),
            retry=retry_if_exception(self._retry.retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._handler(envelope)
