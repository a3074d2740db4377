import grpc
import pytest

from flywheel_common import errors
from flywheel_common.grpc_server import STATUS_OF_ERROR, default_role, status_of
from flywheel_common.settings import Role


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def test_every_error_maps_to_a_precise_status() -> None:
    for error_type in _all_subclasses(errors.FlywheelError):
        code = status_of(error_type("x"))
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), error_type
    # Every error of the shared hierarchy has its own entry; services' subclasses inherit.
    shared = {e for e in _all_subclasses(errors.FlywheelError) if e.__module__ == errors.__name__}
    assert set(STATUS_OF_ERROR) == shared


def test_subclasses_inherit_their_parents_status() -> None:
    class ModelNotFound(errors.NotFound):
        pass

    assert status_of(ModelNotFound("no model")) is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("method", "role"),
    [
        ("GetModel", Role.READER),
        ("ListModelVersions", Role.READER),
        ("SearchModelVersions", Role.READER),
        ("ModelInfer", Role.READER),
        ("ServerLive", Role.READER),
        ("RegisterModelVersion", Role.WRITER),
        ("SetAlias", Role.WRITER),
    ],
)
def test_reads_need_reader_and_writes_need_writer(method: str, role: Role) -> None:
    assert default_role(method) is role
