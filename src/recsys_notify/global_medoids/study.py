"""The refresh-policy study: replay a date range with global medoids refreshed every N days, per N.

For every day ``D`` of the range it reads what the notifications step reads (user medoids of ``D``,
items, users, vectors, the event history) and the events of ``D + 1``; for each policy, on its
refresh days it reclusters ``D``'s user medoids in memory
(:func:`recsys_notify.global_medoids.refresh_policy.refresh`, ids kept stable against the policy's
previous set), on the other days it keeps the last set. It then chooses the day's notifications
with the transparent score and evaluates them against ``D + 1`` like the notifications step does.
Nothing is written to storage: production data is never touched.

Every day is replayed as if nothing had been sent before (no delivery history, no ops overrides,
no champion), so the policies differ only in their global medoids. Per policy it reports item and
cluster hit rate (pooled over the days' evaluated users), stability (mean share of users notified on
two consecutive days whose chosen cluster changed) and compute time (CPU seconds of the refreshes); MLflow gets one
parent run with a child run per policy, the table, a quality-vs-cost plot and the recommendation.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from recsys_notify.core import tracking
from recsys_notify.core.config import ConfigError, Settings, problems, resolve_path
from recsys_notify.core.datasets import EVENTS, ITEMS, USER_MEDOIDS, USERS, ContractError
from recsys_notify.core.embeddings import VECTORS, item_vectors, l2_normalize, vectors_request
from recsys_notify.core.inputs import Inputs, as_of, day, resolve, window
from recsys_notify.core.storage import Storage, date_range
from recsys_notify.core.templates import load_phrases
from recsys_notify.global_medoids.params import StudyParams
from recsys_notify.global_medoids.refresh_policy import GlobalSet, cluster_change, recommend, refresh, refresh_dates
from recsys_notify.notifications import arrays
from recsys_notify.notifications.daily import notify
from recsys_notify.notifications.evaluation import evaluate

NAME = "refresh_policy"
EXPERIMENT = "refresh_policy"
VERSION = "replay"
log = logging.getLogger(__name__)


def parse(params: dict[str, Any]) -> StudyParams:
    try:
        return StudyParams.model_validate({k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"invalid refresh_policy parameter(s): {problems(exc)}") from None


def day_inputs(storage: Storage, settings: Settings, dt: date) -> Inputs:
    """What the notifications step reads for ``dt`` except the refresh and delivery history, plus ``dt + 1``."""
    cfg = settings.notifications
    return resolve(storage, {
        "user_medoids": day(USER_MEDOIDS, dt),
        "items": as_of(ITEMS, dt),
        VECTORS: vectors_request(settings.embedding.source, dt),
        "users": as_of(USERS, dt),
        "events": window(EVENTS, dt, max(cfg.history_days, cfg.popularity_days)),
        "next_day": day(EVENTS, dt + timedelta(days=1)),
    })


def day_tables(inputs: Inputs, settings: Settings, dt: date) -> arrays.Tables:
    """The notification tables of ``dt``; the refresh's tables are filled in per policy."""
    cfg, cols = settings.notifications, arrays.COLUMNS
    events = [((dt - p.dt).days, inputs.storage.read_partition(p, arrays.event_columns((dt - p.dt).days, cfg)))
              for p in inputs["events"].partitions]
    empty = pd.DataFrame()
    return arrays.Tables(
        user_medoids=inputs.frame("user_medoids", cols["user_medoids"]), global_medoids=empty,
        global_clusters=empty, templates=empty, overrides=None, items=inputs.dimension("items", cols["items"]),
        vectors=item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim),
        users=inputs.dimension("users", cols["users"]), events=events, delivery_log=[], delivery_feedback=[])


def refresh_on(inputs: Inputs, tables: arrays.Tables, settings: Settings, dt: date,
               previous: GlobalSet | None) -> GlobalSet:
    """One in-memory refresh on ``dt``'s user medoids (what the global_medoids step would compute, no overrides)."""
    medoids = tables.user_medoids
    if medoids.empty:
        raise ContractError(f"user_medoids for {dt} is empty: nothing to cluster")
    item_ids, matrix = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim,
                                    item_ids=np.unique(medoids["item_id"].to_numpy(np.int64)))
    by_id = tables.items.set_index("item_id")
    return refresh(dt, item_ids, l2_normalize(matrix), by_id.loc[item_ids, "language"].astype(str).to_numpy(),
                   by_id.loc[item_ids, "caption"].astype(str).tolist(), settings.global_medoids,
                   load_phrases(resolve_path(settings.global_medoids.phrases_path)), previous)


def replay(storage: Storage, settings: Settings, study: StudyParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (policy, day) metrics and the per-policy table; pure apart from reading storage."""
    days = date_range(study.start, study.end)
    schedule = {n: set(refresh_dates(study.start, study.end, n)) for n in study.every}
    current: dict[int, GlobalSet] = {}
    chosen: dict[int, pd.Series] = {}
    rows = []
    resolved = {dt: day_inputs(storage, settings, dt) for dt in days}  # a missing day fails before any replay
    for dt, inputs in resolved.items():
        tables = day_tables(inputs, settings, dt)
        next_day = inputs.frame("next_day", ["user_id", "item_id", "completion", "liked"])
        for n in study.every:
            refreshed = dt in schedule[n]
            if refreshed:
                current[n] = refresh_on(inputs, tables, settings, dt, current.get(n))
            gs = current[n]
            dense = arrays.build(replace(tables, global_medoids=gs.medoids, global_clusters=gs.clusters,
                                         templates=gs.templates), settings, dt)
            result = notify(dense, settings, None, VERSION)
            metrics = evaluate(dense, result.index, result.outbox, next_day, settings.notifications)
            sent = result.outbox.set_index("user_id")["cluster_id"]
            rows.append({"every": n, "dt": dt, "refreshed": refreshed,
                         "refresh_seconds": gs.seconds if refreshed else 0.0,
                         "clusters": len(gs.cluster_ids), "set_age_days": (dt - gs.dt).days,
                         "evaluated": int(metrics.get("evaluated_users", 0)),
                         "hit_rate_item": metrics.get("hit_rate_item", 0.0),
                         "hit_rate_cluster": metrics.get("hit_rate_cluster", 0.0),
                         "cluster_changed": cluster_change(chosen[n], sent) if n in chosen else np.nan})
            chosen[n] = sent
        log.info("refresh-policy replay %s done", dt)
    daily = pd.DataFrame(rows)
    return daily, summarise(daily)


def summarise(daily: pd.DataFrame) -> pd.DataFrame:
    """Per policy: pooled hit rates, stability, refreshes and their compute time."""
    out = []
    for n, g in daily.groupby("every", sort=True):
        users = g["evaluated"].sum()
        pooled = {m: float((g[m] * g["evaluated"]).sum() / users) if users else 0.0
                  for m in ("hit_rate_item", "hit_rate_cluster")}
        out.append({"every": int(n), **pooled, "evaluated": int(users),
                    "cluster_changed": float(g["cluster_changed"].mean()) if g["cluster_changed"].notna().any()
                    else 0.0,
                    "refreshes": int(g["refreshed"].sum()), "compute_seconds": float(g["refresh_seconds"].sum())})
    return pd.DataFrame(out)


def format_table(table: pd.DataFrame) -> str:
    """The per-policy table as Markdown (what the CLI, the benchmark and the docs print)."""
    lines = ["| refresh every | item hit rate | cluster hit rate | users whose cluster changed | refreshes | "
             "compute (CPU s) |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.every} d | {r.hit_rate_item:.4f} | {r.hit_rate_cluster:.4f} | {r.cluster_changed:.1%} | "
                     f"{r.refreshes} | {r.compute_seconds:.2f} |")
    return "\n".join(lines)


def run(storage: Storage, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
    """Replay, log the parent and child MLflow runs, and return the table and the recommendation."""
    import mlflow

    study = parse(params)
    daily, table = replay(storage, settings, study)
    every, reason = recommend(table)
    cfg = settings.global_medoids
    logged = {"start": study.start, "end": study.end, "every": ",".join(map(str, study.every)), "k": cfg.k,
              "niter": cfg.niter, "seed": cfg.seed, "match_max_distance": cfg.match_max_distance,
              "embedding_source": settings.embedding.source, "trimmed_dim": settings.embedding.trimmed_dim,
              "schedule_configured": cfg.schedule}
    with tracking.tracked_run(EXPERIMENT, f"{NAME} {study.start}..{study.end}", params=logged,
                              tags={"step": NAME, "start": study.start.isoformat(), "end": study.end.isoformat()},
                              settings=settings) as parent:
        for row in table.to_dict("records"):
            with mlflow.start_run(run_name=f"every {row['every']}d", nested=True,
                                  experiment_id=parent.info.experiment_id, tags={"step": NAME}):
                mlflow.log_params({"every": row["every"], "start": study.start.isoformat(),
                                   "end": study.end.isoformat()})
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "every"})
                for i, r in enumerate(daily[daily["every"] == row["every"]].itertuples()):
                    mlflow.log_metrics({"daily_hit_rate_item": r.hit_rate_item,
                                        "daily_hit_rate_cluster": r.hit_rate_cluster,
                                        "set_age_days": float(r.set_age_days)}, step=i)
        mlflow.set_tag("recommended_every_days", str(every))
        mlflow.log_metric("recommended_every_days", every)
        mlflow.log_text(format_table(table) + f"\n\nRecommendation: {reason}\n", "refresh_policy.md")
        mlflow.log_dict({"table": table.to_dict("records"), "daily": daily.astype({"dt": str}).to_dict("records"),
                         "recommendation": reason}, "refresh_policy.json")
        _quality_cost_plot(table, every)
    return {"step": NAME, "start": study.start.isoformat(), "end": study.end.isoformat(),
            "table": table.to_dict("records"), "recommended_every_days": every, "recommendation": reason,
            **tracking.run_ids(parent)}


def _quality_cost_plot(table: pd.DataFrame, recommended: int) -> None:
    with tracking.logged_figure("quality_vs_cost.png", figsize=(6, 4)) as (_, ax):
        ax.plot(table["compute_seconds"], table["hit_rate_item"], "o-", label="item hit rate")
        ax.plot(table["compute_seconds"], table["hit_rate_cluster"], "s--", label="cluster hit rate")
        for r in table.itertuples():
            ax.annotate(f"{r.every}d" + (" (chosen)" if r.every == recommended else ""),
                        (r.compute_seconds, r.hit_rate_item), textcoords="offset points", xytext=(4, 4))
        ax.set(xlabel="refresh compute time over the range (s)", ylabel="next-day hit rate",
               title="Global-medoid refresh policy: quality vs cost")
        ax.legend(loc="best")
