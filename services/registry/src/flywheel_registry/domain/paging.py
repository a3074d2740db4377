"""Page tokens: opaque to callers, bound to the query that issued them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from flywheel_common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must be 0 (default) or positive, not {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def query_fingerprint(query: Any) -> str:
    """A short digest of a query, so a page token is only accepted by the query that made it."""
    canonical = json.dumps(query, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(position: Any, fingerprint: str) -> str:
    payload = json.dumps({"p": position, "q": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str, kind: type[Any] = int) -> Any:
    """The position a token points at (of type `kind`); None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, token_fingerprint = data["p"], data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument("page_token is not a token this server issued") from None
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            "page_token belongs to a different query; repeat the query that returned it"
        )
    if not isinstance(position, kind) or isinstance(position, bool):
        raise InvalidArgument("page_token is not a token this server issued")
    return position
