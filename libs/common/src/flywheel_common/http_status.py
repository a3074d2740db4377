"""Flywheel errors as HTTP statuses, for the services' HTTP endpoints (the gateway's KServe
V2 REST API, the drift reports): the counterpart of the gRPC mapping in grpc_server."""

from __future__ import annotations

from collections.abc import Mapping

from flywheel_common import errors

STATUS_OF_ERROR: Mapping[type[errors.FlywheelError], int] = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Aborted: 409,
    errors.FailedPrecondition: 412,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}

INTERNAL = 500

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="flywheel"'}
"""The header a 401 carries: the scheme the caller must authenticate with (RFC 6750)."""


def http_status_of(exc: errors.FlywheelError) -> int:
    for error_type in type(exc).__mro__:
        if error_type in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[error_type]
    return INTERNAL


def challenge_of(status: int) -> Mapping[str, str]:
    """The headers an error answer of `status` needs beyond its body."""
    return BEARER_CHALLENGE if status == 401 else {}
