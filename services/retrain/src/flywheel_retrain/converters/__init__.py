"""Between the retrain contract (protobuf) and the domain: messages in, domain values out,
and the JSON documents run rows keep (the contract's JSON form, readable by ops tooling).

Modules, each depending only on those above it:

- `fields`: enum members by name, timestamps, drift severities and alert kinds.
- `documents`: messages as the JSON documents run rows keep.
- `policies`: retrain policies (API messages and the stored document).
- `runs`: runs and what they record: trigger, dataset, gate verdict, approval.
- `events`: the contract's events for the domain events a run records.
- `inputs`: the events the trigger follows (drift alerts, metric windows).
"""

from flywheel_retrain.converters.events import event_message
from flywheel_retrain.converters.inputs import alert_of, window_of
from flywheel_retrain.converters.policies import (
    policy_document,
    policy_from_document,
    policy_message,
    policy_of,
)
from flywheel_retrain.converters.runs import (
    approval_document,
    approval_from_document,
    approval_message,
    dataset_document,
    dataset_from_document,
    dataset_message,
    gate_document,
    gate_from_document,
    gate_message,
    run_message,
    run_states,
    trigger_document,
    trigger_from_document,
    trigger_message,
)

__all__ = [
    "alert_of",
    "approval_document",
    "approval_from_document",
    "approval_message",
    "dataset_document",
    "dataset_from_document",
    "dataset_message",
    "event_message",
    "gate_document",
    "gate_from_document",
    "gate_message",
    "policy_document",
    "policy_from_document",
    "policy_message",
    "policy_of",
    "run_message",
    "run_states",
    "trigger_document",
    "trigger_from_document",
    "trigger_message",
    "window_of",
]
