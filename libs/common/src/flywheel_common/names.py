"""Model and alias names: the one rule every service checks them with."""

from __future__ import annotations

import re

from flywheel_common.errors import InvalidArgument

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def check_name(kind: str, value: str) -> str:
    """Model and alias names: lowercase, digits, '.', '_', '-'; 1 to 128 characters."""
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not a valid name: use 1 to 128 characters of a-z, 0-9, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return value
