"""One exception hierarchy for every service; the gRPC layer maps it to status codes."""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error a caller can act on. The message must say what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FlywheelError):
    """The request is malformed or violates a rule of the contract."""


class NotFound(FlywheelError):
    """The named model, version, rollout or run does not exist."""


class AlreadyExists(FlywheelError):
    """The thing to create exists already."""


class FailedPrecondition(FlywheelError):
    """The system is not in a state where the request can run (for example: archived)."""


class Aborted(FlywheelError):
    """A concurrent change won; retrying the request may succeed."""


class Unauthenticated(FlywheelError):
    """No valid bearer token was presented."""


class PermissionDenied(FlywheelError):
    """The caller's role does not allow the request."""


class ResourceExhausted(FlywheelError):
    """A size or rate limit was exceeded."""


class Unavailable(FlywheelError):
    """A dependency or the requested model is not ready yet; retry later."""


class DeadlineExceeded(FlywheelError):
    """The work did not finish within its time limit."""


def required(value: str, name: str) -> str:
    """The value of a required request field; INVALID_ARGUMENT naming it when empty."""
    if not value:
        raise InvalidArgument(f"{name} is required")
    return value
