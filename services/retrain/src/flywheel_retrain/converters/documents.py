"""Messages as the JSON documents run rows keep (the contract's JSON form, proto field
names kept, readable by ops tooling)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def from_json(document: dict[str, Any], message: Any) -> Any:
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)
