"""The one rule for model and alias names, and for prefixes of them."""

import pytest

from flywheel_common.errors import InvalidArgument
from flywheel_common.names import check_name, check_prefix


def test_a_huge_invalid_name_is_quoted_shortened() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_name("model", "X" * 300_000)
    assert refused.value.message.startswith("model 'XXXX")
    assert "...' is not a valid name" in refused.value.message
    assert len(refused.value.message) < 400


@pytest.mark.parametrize("prefix", ["", "i", "iris-", "a" * 128])
def test_prefixes_of_possible_names_pass(prefix: str) -> None:
    assert check_prefix("name_prefix", prefix) == prefix


@pytest.mark.parametrize("prefix", ["x" * 129, "x" * 300_000, "Iris", "a\x00", "%"])
def test_prefixes_no_name_can_have_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match=r"name_prefix .* is not a valid name"):
        check_prefix("name_prefix", prefix)
