"""Model and alias names: the one rule every service checks them with."""

from __future__ import annotations

import re

from flywheel_common.errors import InvalidArgument

MAX_NAME_LENGTH = 128
NAME_PATTERN = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


def check_name(kind: str, value: str) -> str:
    """Model and alias names: lowercase, digits, '.', '_', '-'; 1 to 128 characters."""
    if not NAME_PATTERN.fullmatch(value):
        shown = value if len(value) <= MAX_NAME_LENGTH else value[:MAX_NAME_LENGTH] + "..."
        raise InvalidArgument(
            f"{kind} {shown!r} is not a valid name: use 1 to {MAX_NAME_LENGTH} characters of "
            "a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_prefix(kind: str, value: str) -> str:
    """A prefix of names (empty for every name): what a name may start with."""
    if value:
        check_name(kind, value)
    return value
