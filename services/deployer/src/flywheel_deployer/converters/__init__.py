"""Between the deployer's domain and its protobuf contract (API, events, stored JSON).

Modules, one part of the contract each:

- `documents`: messages as the JSON documents the database stores.
- `policies`: deployment policies, strategies and gateway version policies.
- `steps`: a rollout's steps and their analysis results.
- `rollouts`: rollouts and the events their transitions record.
- `routing`: routing states (DeploymentState) and gateways' readiness.
- `inputs`: the events the deployer follows (promotions, metric windows).
"""

from flywheel_deployer.converters.documents import to_json
from flywheel_deployer.converters.inputs import PRODUCTION, metric_window_of, promotion_of
from flywheel_deployer.converters.policies import (
    STRATEGIES,
    STRATEGY_NUMBERS,
    override_of,
    policy_document,
    policy_from_document,
    policy_message,
    policy_of,
    requested_strategy,
    strategy_of,
    version_policy_message,
    version_policy_of,
)
from flywheel_deployer.converters.rollouts import (
    PHASE_NUMBERS,
    PHASES,
    TRIGGER_NUMBERS,
    event_message,
    phases_of,
    rollout_message,
)
from flywheel_deployer.converters.routing import (
    ROLE_NUMBERS,
    ROLES,
    readiness_message,
    routing_of,
    state_message,
    state_of,
)
from flywheel_deployer.converters.steps import (
    analysis_document,
    analysis_from_document,
    analysis_message,
    analysis_of,
    step_message,
    step_of,
    steps_document,
    steps_from_document,
)

__all__ = [
    "PHASES",
    "PHASE_NUMBERS",
    "PRODUCTION",
    "ROLES",
    "ROLE_NUMBERS",
    "STRATEGIES",
    "STRATEGY_NUMBERS",
    "TRIGGER_NUMBERS",
    "analysis_document",
    "analysis_from_document",
    "analysis_message",
    "analysis_of",
    "event_message",
    "metric_window_of",
    "override_of",
    "phases_of",
    "policy_document",
    "policy_from_document",
    "policy_message",
    "policy_of",
    "promotion_of",
    "readiness_message",
    "requested_strategy",
    "rollout_message",
    "routing_of",
    "state_message",
    "state_of",
    "step_message",
    "step_of",
    "steps_document",
    "steps_from_document",
    "strategy_of",
    "to_json",
    "version_policy_message",
    "version_policy_of",
]
