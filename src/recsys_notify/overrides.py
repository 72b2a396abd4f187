"""Ops overrides of global medoids: pin a cluster's representative, block items, revoke earlier overrides.

Requests come from DAG params (or CLI flags) and are validated before anything is written: the
item must exist on the run date, must not be blocked, and must match the requested language.
Every refresh writes the full ``overrides`` history for its date (previous snapshot + this run's
requests), so the dataset is its own audit trail (who, why, when, which run); an override applies
to every later refresh until its expiry date (inclusive) or until it is revoked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd

from recsys_notify.contract import LANGUAGES
from recsys_notify.storage import Storage, as_date

DATASET = "overrides"
COLUMNS = ["override_id", "action", "cluster_id", "language", "item_id", "reason", "requested_by", "requested_at",
           "run_id", "created_dt", "expires", "revoked_dt", "revoked_by"]


class OverrideError(ValueError):
    """An override request is invalid; nothing has been written."""


@dataclass(frozen=True)
class Replacement:
    cluster_id: int
    item_id: int
    language: str = "*"


@dataclass
class OverrideRequest:
    """What one run asks for (empty request = plain refresh)."""

    replace: list[Replacement] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    revoke: list[str] = field(default_factory=list)
    reason: str = ""
    expires: date | None = None
    requested_by: str = ""

    @property
    def empty(self) -> bool:
        return not (self.replace or self.block or self.revoke)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise OverrideError(f"{what} must be an integer, got {value!r}")
    return int(value)


def parse_request(params: Mapping[str, Any], default_user: str | None = None) -> OverrideRequest:
    """Build a request from DAG params / CLI values, with messages naming the bad field."""
    replace = []
    for i, entry in enumerate(params.get("replace_representatives") or []):
        if not isinstance(entry, Mapping):
            raise OverrideError(f"replace_representatives[{i}] must be an object with cluster_id and item_id")
        unknown = set(entry) - {"cluster_id", "item_id", "language"}
        if unknown:
            raise OverrideError(f"replace_representatives[{i}] has unknown field(s) {sorted(unknown)}")
        for key in ("cluster_id", "item_id"):
            if key not in entry:
                raise OverrideError(f"replace_representatives[{i}] is missing {key}")
        language = str(entry.get("language") or "*")
        if language != "*" and language not in LANGUAGES:
            raise OverrideError(f"replace_representatives[{i}].language {language!r} is not a known language code")
        replace.append(Replacement(_as_int(entry["cluster_id"], f"replace_representatives[{i}].cluster_id"),
                                   _as_int(entry["item_id"], f"replace_representatives[{i}].item_id"), language))
    block = [_as_int(v, f"block_items[{i}]") for i, v in enumerate(params.get("block_items") or [])]
    revoke = [str(v) for v in params.get("revoke_overrides") or []]
    expires = params.get("expires")
    try:
        expires = as_date(expires) if expires not in (None, "") else None
    except ValueError:
        raise OverrideError(f"expires {expires!r} is not a date (YYYY-MM-DD)") from None
    request = OverrideRequest(replace, block, revoke, str(params.get("reason") or "").strip(), expires,
                              str(params.get("requested_by") or default_user or "").strip())
    if not request.empty:
        if not request.reason:
            raise OverrideError("reason is required when requesting overrides (it goes into the audit trail)")
        if not request.requested_by:
            raise OverrideError("requested_by is required when requesting overrides (it goes into the audit trail)")
    keys = [(r.cluster_id, r.language) for r in replace]
    if len(set(keys)) != len(keys):
        raise OverrideError("replace_representatives names the same (cluster_id, language) twice")
    return request


def history(storage: Storage, dt: date) -> pd.DataFrame:
    """Override history as of the day before ``dt`` (empty if none): what this run builds on."""
    days = [d for d in storage.dates(DATASET) if d < dt]
    if not days:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    return storage.read(DATASET, days[-1])


def active(hist: pd.DataFrame, dt: date) -> pd.DataFrame:
    """Overrides in force on ``dt``: not revoked and not past their expiry date."""
    if hist.empty:
        return hist
    expires = hist["expires"]  # ISO date strings compare in date order
    live = hist["revoked_dt"].isna() & (expires.isna() | (expires >= dt.isoformat()))
    return hist[live & hist["action"].isin(["replace", "block"])].reset_index(drop=True)


def validate(request: OverrideRequest, dt: date, catalog: pd.DataFrame, current: pd.DataFrame) -> None:
    """Check a request against the item catalog (item_id, language) and overrides in force.

    Raises :class:`OverrideError` listing every problem, so ops fix them in one go.
    """
    problems = []
    if request.expires is not None and request.expires < dt:
        problems.append(f"expires {request.expires} is before the run date {dt}")
    languages = catalog.drop_duplicates("item_id", keep="last").set_index("item_id")["language"]
    blocked = set(current.loc[current["action"] == "block", "item_id"].astype("int64")) if len(current) else set()
    blocked |= set(request.block)
    for item in request.block:
        if item not in languages.index:
            problems.append(f"block_items: item {item} does not exist on {dt}")
    for r in request.replace:
        if r.item_id not in languages.index:
            problems.append(f"replace cluster {r.cluster_id}: item {r.item_id} does not exist on {dt}")
            continue
        if r.item_id in blocked:
            problems.append(f"replace cluster {r.cluster_id}: item {r.item_id} is blocked")
        if r.language != "*" and languages[r.item_id] != r.language:
            problems.append(f"replace cluster {r.cluster_id} language {r.language}: item {r.item_id} is in "
                            f"language {languages[r.item_id]!r}")
    known = set(current["override_id"]) if len(current) else set()
    for oid in request.revoke:
        if oid not in known:
            problems.append(f"revoke_overrides: {oid!r} is not an override in force")
    if problems:
        raise OverrideError("invalid override params (nothing written): " + "; ".join(problems))


def validate_clusters(request: OverrideRequest, cluster_ids: set[int]) -> None:
    missing = sorted({r.cluster_id for r in request.replace} - cluster_ids)
    if missing:
        raise OverrideError(f"invalid override params (nothing written): cluster id(s) {missing} do not exist in "
                            f"this refresh (valid ids: {min(cluster_ids)}..{max(cluster_ids)})")


def next_history(hist: pd.DataFrame, request: OverrideRequest, dt: date, run_id: str) -> pd.DataFrame:
    """History after this run: previous rows (revocations stamped) plus one row per new request."""
    now = datetime.now(timezone.utc)  # audit timestamp only; never drives what is computed
    out = hist.copy()
    if request.revoke and len(out):
        hit = out["override_id"].isin(request.revoke) & out["revoked_dt"].isna()
        out.loc[hit, "revoked_dt"] = dt.isoformat()
        out.loc[hit, "revoked_by"] = request.requested_by
    common = {"reason": request.reason, "requested_by": request.requested_by, "requested_at": now.isoformat(),
              "run_id": run_id, "created_dt": dt.isoformat(),
              "expires": request.expires.isoformat() if request.expires else None,
              "revoked_dt": None, "revoked_by": None}
    rows = [{"action": "replace", "cluster_id": r.cluster_id, "language": r.language, "item_id": r.item_id, **common}
            for r in request.replace]
    rows += [{"action": "block", "cluster_id": None, "language": None, "item_id": i, **common} for i in request.block]
    rows += [{"action": "revoke", "cluster_id": None, "language": None, "item_id": None, **common,
              "reason": f"revoke {oid}: {request.reason}"} for oid in request.revoke]
    for n, row in enumerate(rows):
        row["override_id"] = f"{dt:%Y%m%d}-{n:03d}"
    frames = [f for f in (out.reindex(columns=COLUMNS), pd.DataFrame(rows, columns=COLUMNS)) if len(f)]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return merged.astype({"cluster_id": "Int64", "item_id": "Int64"}).astype(
        {c: object for c in COLUMNS if c not in ("cluster_id", "item_id")})


def pending_expiry(hist: pd.DataFrame, dt: date, days: int = 7) -> int:
    """How many active overrides expire within ``days`` (surfaced as a metric for ops)."""
    live = active(hist, dt)
    if live.empty:
        return 0
    expires = live["expires"]
    return int((expires.notna() & (expires <= (dt + timedelta(days=days)).isoformat())).sum())
