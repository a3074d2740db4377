"""A search of versions across models, as callers state it (storage turns it into SQL)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flywheel_common.errors import InvalidArgument
from flywheel_common.names import check_name
from flywheel_registry.domain.rules import check_key, check_text


@dataclass(frozen=True)
class MetricCondition:
    metric: str
    comparison: str
    """One of <, <=, ==, >=, >."""
    value: float


@dataclass(frozen=True)
class OrderKey:
    field: str
    """created_at, version, model or metric."""
    metric: str = ""
    descending: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """Versions across models: filters on tags, metrics, aliases and time, any ordering."""

    models: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    metrics: tuple[MetricCondition, ...] = ()
    aliases: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_archived: bool = False
    order_by: tuple[OrderKey, ...] = ()
    page_size: int = 0
    page_token: str = ""

    def fingerprint(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data.pop("page_size")
        data.pop("page_token")
        return data

    def check(self) -> None:
        for name in self.models:
            check_name("model", name)
        for alias in self.aliases:
            check_name("alias", alias)
        for tag_key, tag_value in self.tags:
            check_key("tags", tag_key)
            check_text(f"tags[{tag_key[:40]!r}]", tag_value)
        for name in [c.metric for c in self.metrics] + [k.metric for k in self.order_by]:
            check_text("metric name", name, 256)
        for condition in self.metrics:
            if not math.isfinite(condition.value):
                raise InvalidArgument(f"metric filter on {condition.metric!r} needs a finite value")
        for key in self.order_by:
            if key.field == "metric" and not key.metric:
                raise InvalidArgument("ordering by a metric needs the metric's name")
