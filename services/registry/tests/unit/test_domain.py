import threading

import pytest

from flywheel_common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from flywheel_common.signatures import DYNAMIC, Signature, TensorSpec
from flywheel_registry.domain import (
    ReferenceSampleLayout,
    check_compatible_with_production,
    check_name,
    check_text,
    decode_page_token,
    encode_page_token,
    page_size,
    signature_incompatibilities,
)
from flywheel_registry.onnx_validation import OnnxValidator, validate_onnx
from flywheel_testing.models import IrisModels

IRIS = Signature(
    inputs=(TensorSpec("features", "FP32", (DYNAMIC, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (DYNAMIC,)),
        TensorSpec("probabilities", "FP32", (DYNAMIC, 3)),
    ),
)


@pytest.mark.parametrize("name", ["iris", "a", "fraud-v2.1_x", "0model", "a" * 128])
def test_valid_names(name: str) -> None:
    assert check_name("model", name) == name


@pytest.mark.parametrize("name", ["", "Iris", "-x", ".x", "a b", "a/b", "a" * 129, "ü", "x\x00"])
def test_invalid_names_say_the_rule(name: str) -> None:
    with pytest.raises(InvalidArgument, match="1 to 128 characters of a-z, 0-9"):
        check_name("model", name)


def test_text_rejects_nul_and_oversize() -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        check_text("reason", "a\x00b")
    with pytest.raises(InvalidArgument, match="limited to 3 characters"):
        check_text("reason", "abcd", 3)


def test_same_signature_and_wider_shapes_are_compatible() -> None:
    assert signature_incompatibilities(IRIS, IRIS) == []
    fixed_batch = Signature(inputs=(TensorSpec("features", "FP32", (32, 4)),), outputs=IRIS.outputs)
    assert signature_incompatibilities(IRIS, fixed_batch) == []
    extra_output = Signature(
        inputs=IRIS.inputs, outputs=(*IRIS.outputs, TensorSpec("embedding", "FP32", (DYNAMIC, 8)))
    )
    assert signature_incompatibilities(IRIS, extra_output) == []


def test_breaking_changes_are_named() -> None:
    candidate = Signature(
        inputs=(
            TensorSpec("features", "FP64", (DYNAMIC, 4)),
            TensorSpec("extra", "FP32", (DYNAMIC,)),
        ),
        outputs=(TensorSpec("label", "INT64", (DYNAMIC, 2)),),
    )
    assert signature_incompatibilities(IRIS, candidate) == [
        "input 'features' changed type FP32 -> FP64",
        "new input 'extra' that current callers do not send",
        "output changed shape label: INT64[?] -> label: INT64[?, 2]",
        "output 'probabilities' is gone",
    ]
    with pytest.raises(FailedPrecondition, match="incompatible with production version 3"):
        check_compatible_with_production(IRIS, candidate, 3, breaking=False)
    check_compatible_with_production(IRIS, candidate, 3, breaking=True)
    check_compatible_with_production(None, candidate, 0, breaking=False)


def test_signature_round_trips_through_json() -> None:
    assert Signature.from_json(IRIS.to_json()) == IRIS


def test_reference_sample_layout_rules() -> None:
    layout = ReferenceSampleLayout("FP32", (150, 4), ("a", "b", "c", "d"), "features")
    layout.check(IRIS)
    assert layout.size_bytes == 150 * 4 * 4
    layout.check_received(2400)
    with pytest.raises(InvalidArgument, match="2400 bytes but 10 bytes arrived"):
        layout.check_received(10)
    for bad, message in [
        (ReferenceSampleLayout("INT8", (1, 4), (), ""), "FP32 or FP64"),
        (ReferenceSampleLayout("FP32", (4,), (), ""), r"\[rows, features\]"),
        (ReferenceSampleLayout("FP32", (1, 4), ("a",), ""), "1 feature names"),
        (ReferenceSampleLayout("FP32", (1, 4), (), "nope"), "not a model input"),
        (ReferenceSampleLayout("FP32", (1, 3), (), ""), "takes 4"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            bad.check(IRIS)


def test_page_tokens_belong_to_their_query() -> None:
    token = encode_page_token(42, "query-a")
    assert decode_page_token(token, "query-a") == 42
    assert decode_page_token("", "query-a") is None
    with pytest.raises(InvalidArgument, match="different query"):
        decode_page_token(token, "query-b")
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        decode_page_token("!!!", "query-a")
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        decode_page_token(encode_page_token("text", "query-a"), "query-a", int)


def test_page_size_defaults_and_caps() -> None:
    assert page_size(0) == 100
    assert page_size(5) == 5
    assert page_size(10**9) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_onnx_validation_extracts_the_signature(iris_models: IrisModels) -> None:
    validated = validate_onnx(iris_models.classifier)
    assert validated.signature == IRIS
    assert validated.opset_version == 17


async def test_validation_has_a_time_limit(iris_models: IrisModels) -> None:
    validator = OnnxValidator(timeout_seconds=0.2, max_concurrent=1)
    release = threading.Event()
    # The only worker is busy with a validation that never ends: the next one cannot finish.
    validator._executor.submit(release.wait, 30)
    try:
        with pytest.raises(DeadlineExceeded, match="took longer than"):
            await validator.validate(iris_models.classifier)
    finally:
        release.set()
        await validator.stop()
