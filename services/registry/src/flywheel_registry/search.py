"""Version search: filters on tags, metrics, aliases and time, with any ordering, as SQL."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from flywheel_common.errors import InvalidArgument
from flywheel_registry.domain import check_key, check_name, check_text
from flywheel_registry.storage import AliasRow, MetricRow, TagRow, VersionRow


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

    def statement(self) -> Any:
        for name in self.models:
            check_name("model", name)
        for alias in self.aliases:
            check_name("alias", alias)
        for tag_key, tag_value in self.tags:
            check_key("tags", tag_key)
            check_text(f"tags[{tag_key[:40]!r}]", tag_value)
        for name in [c.metric for c in self.metrics] + [k.metric for k in self.order_by]:
            check_text("metric name", name, 256)
        query = select(VersionRow)
        if self.models:
            query = query.where(VersionRow.model_name.in_(self.models))
        for tag_key, tag_value in self.tags:
            query = query.where(
                exists().where(
                    TagRow.version_id == VersionRow.id,
                    TagRow.key == tag_key,
                    TagRow.value == tag_value,
                )
            )
        for condition in self.metrics:
            if not math.isfinite(condition.value):
                raise InvalidArgument(f"metric filter on {condition.metric!r} needs a finite value")
            compare = {
                "<": MetricRow.value < condition.value,
                "<=": MetricRow.value <= condition.value,
                "==": MetricRow.value == condition.value,
                ">=": MetricRow.value >= condition.value,
                ">": MetricRow.value > condition.value,
            }[condition.comparison]
            query = query.where(
                exists().where(
                    MetricRow.version_id == VersionRow.id,
                    MetricRow.name == condition.metric,
                    compare,
                )
            )
        if self.aliases:
            query = query.where(
                exists().where(
                    AliasRow.model_id == VersionRow.model_id,
                    AliasRow.version == VersionRow.version,
                    AliasRow.name.in_(self.aliases),
                )
            )
        if self.created_after is not None:
            query = query.where(VersionRow.created_at >= self.created_after)
        if self.created_before is not None:
            query = query.where(VersionRow.created_at < self.created_before)
        if not self.include_archived:
            query = query.where(VersionRow.archived.is_(False))
        ordering: list[Any] = []
        for key in self.order_by or (OrderKey("created_at", descending=True),):
            if key.field == "metric":
                if not key.metric:
                    raise InvalidArgument("ordering by a metric needs the metric's name")
                metric = aliased(MetricRow)
                query = query.outerjoin(
                    metric, (metric.version_id == VersionRow.id) & (metric.name == key.metric)
                )
                column: Any = metric.value
            else:
                column = {
                    "created_at": VersionRow.created_at,
                    "version": VersionRow.version,
                    "model": VersionRow.model_name,
                }[key.field]
            ordering.append((column.desc() if key.descending else column.asc()).nulls_last())
        ordering += [VersionRow.model_name.asc(), VersionRow.version.asc()]
        return query.order_by(*ordering)
