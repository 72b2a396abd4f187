"""Ops overrides of global medoids: pin a cluster's representative, block items, revoke earlier overrides.

Requests come from DAG params (or CLI flags) and are validated before anything is written: the
item must exist on the run date, must not be blocked, and must match the requested language.
Every refresh writes the full ``overrides`` history for its date (previous snapshot + this run's
requests), so the dataset is its own audit trail (who, why, when, which run); an override applies
to every later refresh until its expiry date (inclusive) or until it is revoked. A second run for
the same date (another trigger) keeps what earlier runs of that date requested; a retry of the same
run replaces only its own requests.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd

from recsys_notify.core.config import ConfigError
from recsys_notify.core.datasets import OVERRIDES
from recsys_notify.global_medoids.params import OverrideParams

COLUMNS = OVERRIDES.columns
_EMPTY = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


class OverrideError(ConfigError):
    """An override request is invalid; nothing has been written (a bad param: never retried)."""


def history(before: pd.DataFrame | None, same_day: pd.DataFrame | None, dt: date, run_id: str) -> pd.DataFrame:
    """The override history run ``run_id`` builds on (empty if none).

    That is the newest snapshot before ``dt`` (``before``) plus what other runs of ``dt`` already did
    (``same_day``: their requests and revocations), so a second trigger for a date keeps the first
    one's overrides while a retry of the same run does not apply its own twice.
    """
    hist = before.reindex(columns=COLUMNS) if before is not None else _EMPTY.copy()
    if same_day is None:
        return hist
    same_day = same_day.reindex(columns=COLUMNS)
    stamp = ["revoked_dt", "revoked_by", "revoked_run_id"]
    same_day.loc[same_day["revoked_run_id"] == run_id, stamp] = None
    today = dt.isoformat()
    requested = same_day[(same_day["created_dt"] == today) & (same_day["run_id"] != run_id)]
    hist = pd.concat([f for f in (hist, requested) if len(f)] or [_EMPTY], ignore_index=True)
    revoked = same_day[(same_day["revoked_dt"] == today) & same_day["revoked_run_id"].notna()
                       & (same_day["revoked_run_id"] != run_id)].set_index("override_id")
    hit = hist["override_id"].isin(revoked.index)
    hist.loc[hit, stamp] = revoked.loc[hist.loc[hit, "override_id"], stamp].to_numpy()
    return hist


def active(hist: pd.DataFrame, dt: date) -> pd.DataFrame:
    """Overrides in force on ``dt``: not revoked and not past their expiry date."""
    if hist.empty:
        return hist
    expires = hist["expires"]  # ISO date strings compare in date order
    live = hist["revoked_dt"].isna() & (expires.isna() | (expires >= dt.isoformat()))
    return hist[live & hist["action"].isin(["replace", "block"])].reset_index(drop=True)


def validate(request: OverrideParams, dt: date, catalog: pd.DataFrame, current: pd.DataFrame) -> None:
    """Check a request against the item catalog (item_id, language) and overrides in force.

    Raises :class:`OverrideError` listing every problem, so ops fix them in one go.
    """
    problems = []
    if request.expires is not None and request.expires < dt:
        problems.append(f"expires {request.expires} is before the run date {dt}")
    languages = catalog.drop_duplicates("item_id", keep="last").set_index("item_id")["language"]
    blocked = set(current.loc[current["action"] == "block", "item_id"].astype("int64")) if len(current) else set()
    blocked |= set(request.block_items)
    for item in request.block_items:
        if item not in languages.index:
            problems.append(f"block_items: item {item} does not exist on {dt}")
    for r in request.replace_representatives:
        if r.item_id not in languages.index:
            problems.append(f"replace cluster {r.cluster_id}: item {r.item_id} does not exist on {dt}")
            continue
        if r.item_id in blocked:
            problems.append(f"replace cluster {r.cluster_id}: item {r.item_id} is blocked")
        if r.language != "*" and languages[r.item_id] != r.language:
            problems.append(f"replace cluster {r.cluster_id} language {r.language}: item {r.item_id} is in "
                            f"language {languages[r.item_id]!r}")
    known = set(current["override_id"]) if len(current) else set()
    for oid in request.revoke_overrides:
        if oid not in known:
            problems.append(f"revoke_overrides: {oid!r} is not an override in force")
    if problems:
        raise OverrideError("invalid override params (nothing written): " + "; ".join(problems))


def validate_clusters(request: OverrideParams, cluster_ids: set[int]) -> None:
    missing = sorted({r.cluster_id for r in request.replace_representatives} - cluster_ids)
    if missing:
        raise OverrideError(f"invalid override params (nothing written): cluster id(s) {missing} do not exist in "
                            f"this refresh (valid ids: {min(cluster_ids)}..{max(cluster_ids)})")


def next_history(hist: pd.DataFrame, request: OverrideParams, dt: date) -> pd.DataFrame:
    """History after this run: previous rows (revocations stamped) plus one row per new request."""
    now = datetime.now(timezone.utc)  # audit timestamp only; never drives what is computed
    run_id = request.run_id
    out = hist.copy()
    if request.revoke_overrides and len(out):
        hit = out["override_id"].isin(request.revoke_overrides) & out["revoked_dt"].isna()
        out.loc[hit, "revoked_dt"] = dt.isoformat()
        out.loc[hit, "revoked_by"] = request.requested_by
        out.loc[hit, "revoked_run_id"] = run_id
    common = {"reason": request.reason, "requested_by": request.requested_by, "requested_at": now.isoformat(),
              "run_id": run_id, "created_dt": dt.isoformat(),
              "expires": request.expires.isoformat() if request.expires else None,
              "revoked_dt": None, "revoked_by": None, "revoked_run_id": None}
    rows = [{"action": "replace", "cluster_id": r.cluster_id, "language": r.language, "item_id": r.item_id, **common}
            for r in request.replace_representatives]
    rows += [{"action": "block", "cluster_id": None, "language": None, "item_id": i, **common}
             for i in request.block_items]
    rows += [{"action": "revoke", "cluster_id": None, "language": None, "item_id": None, **common,
              "reason": f"revoke {oid}: {request.reason}"} for oid in request.revoke_overrides]
    earlier_today = int((out["created_dt"] == dt.isoformat()).sum()) if len(out) else 0
    for n, row in enumerate(rows, start=earlier_today):
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
