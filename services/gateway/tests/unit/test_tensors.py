"""Decoding request tensors: values and shapes that numpy cannot hold are the caller's error."""

import numpy as np
import pytest

from flywheel_common.errors import InvalidArgument
from flywheel_gateway.tensors import MAX_RANK, RequestTensor, datatype_of, raw_of, to_array


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (RequestTensor("x", "INT8", (1,), values=[1000]), "its values do not fit INT8"),
        (RequestTensor("x", "UINT8", (1,), values=[300]), "its values do not fit UINT8"),
        (RequestTensor("x", "UINT16", (1,), values=[-1]), "its values do not fit UINT16"),
        (RequestTensor("x", "FP32", (1,) * 65, values=[1.0]), "shape has 65 dims; at most 32"),
        (RequestTensor("x", "FP32", (0, 2**62), raw=b""), "describes more than 2147483648"),
        (RequestTensor("x", "BYTES", (0, 2**62), raw=b""), "describes more than 2147483648"),
        (RequestTensor("x", "FP32", (2**40, 2**40), values=[]), "describes more than"),
        (RequestTensor("x", "FP32", (2, -1), values=[1.0]), "has a negative dim"),
        (RequestTensor("x", "FP64", (2,), raw=b"\x00" * 15), "needs 16 bytes, received 15"),
    ],
)
def test_tensors_numpy_cannot_hold_are_invalid_arguments(
    tensor: RequestTensor, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment) as refused:
        to_array(tensor)
    assert "input 'x'" in refused.value.message


def test_tensors_at_the_limits_decode() -> None:
    assert to_array(RequestTensor("x", "INT8", (2,), values=[-128, 127])).tolist() == [-128, 127]
    assert to_array(RequestTensor("x", "UINT8", (1,), values=[255])).tolist() == [255]
    assert to_array(RequestTensor("x", "FP32", (1,) * MAX_RANK, values=[1.0])).ndim == MAX_RANK
    empty = to_array(RequestTensor("x", "FP32", (0, 4), raw=b""))
    assert empty.shape == (0, 4)
    assert empty.dtype == np.float32


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.arange(6, dtype=">f4").reshape(2, 3),  # big-endian
        np.arange(6, dtype=np.int64).reshape(2, 3).T,  # column-major
        np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # strided
        np.array([[True, False]]),
    ],
    ids=["fp32", "big-endian", "transposed", "strided", "bool"],
)
def test_answers_and_logs_carry_little_endian_row_major_bytes(array: np.ndarray) -> None:
    raw = raw_of(array)
    little = np.dtype(array.dtype).newbyteorder("<")
    decoded = np.frombuffer(raw, dtype=little).reshape(array.shape)
    assert np.array_equal(decoded, array)
    assert to_array(RequestTensor("x", datatype_of(array), array.shape, raw=raw)).tolist() == (
        array.tolist()
    )


def test_bytes_tensors_are_length_prefixed_and_named_bytes() -> None:
    array = np.array([b"ab", b"c"], dtype=object)
    assert datatype_of(array) == "BYTES"
    assert raw_of(array) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
