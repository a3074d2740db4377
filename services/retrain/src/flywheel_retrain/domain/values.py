"""What a run keeps besides its state: the trigger that started it, its training data,
the reviewer's decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from flywheel_retrain.domain.decisions import Alert
from flywheel_retrain.domain.policy import Policy
from flywheel_retrain.domain.windows import Decay

SYSTEM_ACTOR = "system:retrain"
"""The actor of what the trigger decides on its own (alerts, decay, schedules, the gate)."""


class TriggerKind(IntEnum):
    """What started a run; the name is part of the run's trigger key."""

    DRIFT_ALERT = 1
    METRIC_DECAY = 2
    SCHEDULE = 3
    MANUAL = 4
    FOLLOW_UP = 5


def trigger_key(kind: TriggerKind, source_id: str) -> str:
    return f"TRIGGER_KIND_{kind.name}:{source_id}"


def follow_up_key(run_id: str) -> str:
    """The key of the follow-up of run `run_id`: one per promoted version."""
    return trigger_key(TriggerKind.FOLLOW_UP, run_id)


@dataclass(frozen=True)
class Trigger:
    """A cause that met the policy, before the guards have spoken; the run keeps it."""

    kind: TriggerKind
    source_id: str
    triggered_by: str
    reason: str
    actor: str = SYSTEM_ACTOR
    occurred_at: datetime | None = None
    traceparent: str = ""
    """The cause's trace, which the run's spans and its training job continue."""
    change_began_at: datetime | None = None
    """A concept-drift alert's estimate of when the new concept began."""

    @property
    def key(self) -> str:
        """One run per model and key: the same alert, window or slot never runs twice."""
        return trigger_key(self.kind, self.source_id)

    @classmethod
    def drift_alert(cls, alert: Alert, occurred_at: datetime | None) -> Trigger:
        kinds = ", ".join(sorted(alert.kinds)) or "drift"
        return cls(
            TriggerKind.DRIFT_ALERT,
            alert.alert_id,
            f"drift-alert:{alert.alert_id}",
            f"{alert.severity.name} {kinds} alert on version {alert.version}: "
            f"{alert.drifted_features} drifted feature(s)",
            occurred_at=occurred_at,
            traceparent=alert.traceparent,
            change_began_at=alert.change_began_at,
        )

    @classmethod
    def metric_decay(cls, policy: Policy, decay: Decay, gate_score: float | None) -> Trigger:
        rule = policy.decay_rule(gate_score)
        window = decay.window
        # Measured from the gate, a decay is the version's concept changing: where the
        # decayed windows began is where the change did. A level crossed says no such thing.
        from_gate = policy.decay_trigger.relative_to_gate and gate_score is not None
        measured = (
            f"{policy.decay_trigger.threshold:g} from its gate's {gate_score:g}"
            if from_gate
            else f"{rule.threshold:g}"
        )
        return cls(
            TriggerKind.METRIC_DECAY,
            window.window_id,
            f"metric-decay:{window.window_id}",
            f"{policy.decay_trigger.metric.value} of version {window.version} past "
            f"{measured} for {rule.consecutive_windows} window(s)",
            occurred_at=window.window_end,
            change_began_at=decay.began_at if from_gate else None,
        )

    @classmethod
    def schedule(cls, cron: str, slot: datetime) -> Trigger:
        return cls(
            TriggerKind.SCHEDULE,
            f"{cron}@{slot.isoformat()}",
            f"schedule:{cron}@{slot.isoformat()}",
            f"scheduled by {cron!r}",
            occurred_at=slot,
        )

    @classmethod
    def follow_up(
        cls,
        run_id: str,
        version: int,
        learnt_from: int,
        labeled_since_change: int,
        change: Trigger,
        now: datetime,
    ) -> Trigger:
        """Run `run_id` trained `version` on `learnt_from` rows since the change its
        trigger (`change`) named; `labeled_since_change` rows have come since."""
        return cls(
            TriggerKind.FOLLOW_UP,
            run_id,
            f"follow-up:{run_id}",
            f"version {version} learnt from {learnt_from:,} rows since the change; "
            f"{labeled_since_change:,} have been labelled since",
            occurred_at=now,
            traceparent=change.traceparent,
            change_began_at=change.change_began_at,
        )

    @classmethod
    def manual(cls, key: str, actor: str, reason: str, now: datetime) -> Trigger:
        return cls(
            TriggerKind.MANUAL,
            key,
            f"manual:{actor}",
            reason or "started by hand",
            actor=actor,
            occurred_at=now,
        )


@dataclass(frozen=True)
class Dataset:
    """A run's training data: the CSV file named by its sha256, and where it came from."""

    uri: str
    sha256: str
    row_count: int
    logged_row_count: int
    window_start: datetime | None = None
    window_end: datetime | None = None
    production_dataset_sha256: str = ""


@dataclass(frozen=True)
class Approval:
    approved: bool
    actor: str
    comment: str
    decided_at: datetime | None = None
