"""Run-only params of global_medoids: an ops override request (light: DAG files import it at parse time).

``replace_representatives`` pins an item as a cluster's representative (optionally for one
language), ``block_items`` keeps items out of every cluster, ``revoke_overrides`` ends earlier
overrides; ``reason`` and ``requested_by`` are required with any of them (they go into the audit
trail) and ``expires`` (inclusive) bounds them. An empty request is a plain refresh.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys_notify.core.datasets import LANGUAGES

ItemId = Annotated[int, Field(strict=True)]  # any int64 id; existence is checked against the catalogue


class Replacement(BaseModel):
    """Pin ``item_id`` as the representative of ``cluster_id`` for ``language`` ("*" = every language)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_id: int = Field(ge=0, strict=True)
    item_id: ItemId
    language: str = "*"

    @field_validator("language")
    @classmethod
    def _known(cls, v: str) -> str:
        if v != "*" and v not in LANGUAGES:
            raise ValueError(f"{v!r} is not a known language code (use one of {sorted(LANGUAGES)} or '*')")
        return v


class OverrideParams(BaseModel):
    """What one run asks ops-wise (nothing = plain refresh)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    replace_representatives: list[Replacement] = Field(default_factory=list)
    """pin representatives, e.g. [{"cluster_id": 3, "item_id": 1049, "language": "*"}]"""
    block_items: list[ItemId] = Field(default_factory=list)
    """item ids that must never be a representative"""
    revoke_overrides: list[str] = Field(default_factory=list)
    """override_id values (see the overrides dataset) to end now"""
    reason: str = Field("", max_length=500)
    """why (required with any override; goes into the audit trail)"""
    expires: date | None = None
    """last day the overrides apply (YYYY-MM-DD); empty = until revoked"""
    requested_by: str = Field("", max_length=200)
    """who asks (the Airflow trigger fills in the logged-in user)"""
    run_id: str = Field("cli", max_length=250)
    """audit run id: a retry with the same id replaces that run's requests instead of adding them twice"""

    @property
    def empty(self) -> bool:
        return not (self.replace_representatives or self.block_items or self.revoke_overrides)

    @model_validator(mode="after")
    def _audit_and_unique(self) -> OverrideParams:
        self.reason, self.requested_by = self.reason.strip(), self.requested_by.strip()
        if not self.empty:
            if not self.reason:
                raise ValueError("reason is required when requesting overrides (it goes into the audit trail)")
            if not self.requested_by:
                raise ValueError("requested_by is required when requesting overrides (it goes into the audit trail)")
        keys = [(r.cluster_id, r.language) for r in self.replace_representatives]
        if len(set(keys)) != len(keys):
            raise ValueError("replace_representatives names the same (cluster_id, language) twice")
        return self


class StudyParams(BaseModel):
    """The replay study's range and policies: refresh every N days for each N in ``every``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    start: date
    """first replayed day (needs its user medoids and the next day's events)"""
    end: date
    """last replayed day (inclusive)"""
    every: list[Annotated[int, Field(ge=1, le=365)]] = Field(default_factory=lambda: [1, 3, 7, 14], min_length=1)
    """policies to compare: refresh every N days"""

    @model_validator(mode="after")
    def _ordered(self) -> StudyParams:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        self.every = sorted(set(self.every))
        return self
