"""The notifications step: one message per eligible user for the run date.

Resolves, once at the start: user medoids of ``dt``; one global-medoid refresh (the newest on or
before ``dt``: its medoids, clusters, templates and overrides, all of that same date); items, users
and item vectors as of ``dt``; the history window of events; delivery logs and feedback of earlier
dates (so rerunning a date reproduces the same outbox); the champion's feature window; and the
events of ``dt + 1`` when they exist, for evaluation. Writes ``outbox``, ``delivery_log`` and
``delivery_feedback`` of ``dt`` as one commit and logs counts, evaluation and lineage to MLflow.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import numpy as np

from recsys_notify.core import tracking
from recsys_notify.core.config import Settings, resolve_path
from recsys_notify.core.datasets import (
    DELIVERY_FEEDBACK,
    DELIVERY_LOG,
    EVENTS,
    FRAMES,
    GLOBAL_CLUSTERS,
    GLOBAL_MEDOIDS,
    ITEMS,
    OUTBOX,
    OVERRIDES,
    TEMPLATES,
    USER_MEDOIDS,
    USERS,
)
from recsys_notify.core.embeddings import VECTORS, item_vectors, vectors_request
from recsys_notify.core.inputs import Inputs, as_of, between, day, newest, resolve, window
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage
from recsys_notify.core.templates import load_phrases
from recsys_notify.notifications import arrays
from recsys_notify.notifications.daily import notify
from recsys_notify.notifications.evaluation import evaluate
from recsys_notify.notifications.ranking import TRANSPARENT_VERSION

NAME = "notifications"
CHAMPION = "champion"
log = logging.getLogger(__name__)


def load_champion(settings: Settings) -> Any:
    """The registry's champion (unbound), or None when there is none or ``use_champion`` is off."""
    if not settings.notifications.use_champion:
        return None
    from recsys_notify.two_tower.serving import load_champion as load

    return load(settings)


def resolve_inputs(storage: Storage, settings: Settings, dt: date, champion: Any = None) -> Inputs:
    """Everything one run reads; the refresh's tables are pinned to the date of its global medoids."""
    cfg = settings.notifications
    refresh = resolve(storage, {"global_medoids": newest(GLOBAL_MEDOIDS, dt)})
    refresh_dt = refresh["global_medoids"].dates[0]
    requests = {
        "user_medoids": day(USER_MEDOIDS, dt),
        "global_medoids": day(GLOBAL_MEDOIDS, refresh_dt),
        "global_clusters": day(GLOBAL_CLUSTERS, refresh_dt),
        "templates": day(TEMPLATES, refresh_dt),
        "overrides": day(OVERRIDES, refresh_dt, required=False),
        "items": as_of(ITEMS, dt),
        VECTORS: vectors_request(settings.embedding.source, dt),
        "users": as_of(USERS, dt),
        "events": window(EVENTS, dt, max(cfg.history_days, cfg.popularity_days)),
        "delivery_log": between(DELIVERY_LOG, dt - timedelta(days=max(cfg.sent_lookback_days,
                                                                       cfg.max_per_user_days)), dt - timedelta(days=1)),
        "delivery_feedback": between(DELIVERY_FEEDBACK, dt - timedelta(days=cfg.unengaged_lookback_days),
                                     dt - timedelta(days=1)),
        "next_day": day(EVENTS, dt + timedelta(days=1), required=False),
        "frames": as_of(FRAMES, dt, required=False),
    }
    if champion is not None:
        requests |= champion.requests(dt)
    return resolve(storage, requests)


def read_tables(inputs: Inputs, settings: Settings, dt: date) -> arrays.Tables:
    """Read the resolved partitions, each with only the columns it is used for."""
    cfg, cols = settings.notifications, arrays.COLUMNS
    events = [((dt - p.dt).days, table) for p, table in
              ((p, inputs.storage.read_partition(p, arrays.event_columns((dt - p.dt).days, cfg)))
               for p in inputs["events"].partitions)]
    return arrays.Tables(
        user_medoids=inputs.frame("user_medoids", cols["user_medoids"]),
        global_medoids=inputs.frame("global_medoids", cols["global_medoids"]),
        global_clusters=inputs.frame("global_clusters", cols["global_clusters"]),
        templates=inputs.frame("templates", cols["templates"]),
        overrides=inputs.frame("overrides", cols["overrides"]) if inputs["overrides"].partitions else None,
        items=inputs.dimension("items", cols["items"]),
        vectors=item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim),
        users=inputs.dimension("users", cols["users"]),
        events=events,
        delivery_log=[((dt - p.dt).days, t.to_pandas())
                      for p, t in inputs.tables("delivery_log", cols["delivery_log"])],
        delivery_feedback=[t.to_pandas() for _, t in inputs.tables("delivery_feedback", cols["delivery_feedback"])],
        frames=inputs.dimension("frames", cols["frames"]) if inputs["frames"].partitions else None,
        content=None if settings.embedding.source == "content" or not inputs["frames"].partitions
        else item_vectors(inputs, "content", settings.embedding.trimmed_dim, role="items"),
    )


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Choose, render and write the day's notifications; evaluate on ``dt + 1`` when it exists; track the run."""
    import mlflow

    settings, _ = parse_params(settings, NAME, params)
    cfg = settings.notifications
    phrases = load_phrases(resolve_path(settings.global_medoids.phrases_path))
    champion = load_champion(settings)
    inputs = resolve_inputs(storage, settings, dt, champion)
    dense = arrays.build(read_tables(inputs, settings, dt), settings, dt)
    ranker = champion.bind(inputs) if champion is not None else None
    version = f"two_tower:{champion.version}" if champion is not None else TRANSPARENT_VERSION
    result = notify(dense, settings, ranker, version, phrases)
    next_day = inputs.frame("next_day", ["user_id", "item_id", "completion", "liked"]) \
        if cfg.evaluate and inputs["next_day"].partitions else None
    metrics = evaluate(dense, result.index, result.outbox, next_day, cfg)
    stats = {**result.stats, "lineage": inputs.summary()}
    with tracking.tracked_run(cfg.experiment, f"{NAME}-{dt}",
                              params={**cfg.model_dump(), "embedding_source": settings.embedding.source,
                                      "model_version": version},
                              tags={"dt": dt.isoformat(), "step": NAME}, settings=settings) as active:
        written = storage.write_many(dt, {OUTBOX.name: result.outbox, DELIVERY_LOG.name: result.delivery_log,
                                          DELIVERY_FEEDBACK.name: result.feedback},
                                     {"model_version": version}, {OUTBOX.name: stats})
        tracking.log_lineage(inputs)
        numeric = {k: float(v) for k, v in {**result.stats, **metrics}.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        rows = max(len(result.outbox), 1)  # language, text fallback and image source as shares of the outbox
        numeric |= {f"share_{k}": v / rows for k, v in numeric.items()
                    if k.startswith(("text_", "language_", "frame_", "creator_boosted"))}
        mlflow.log_metrics(numeric)
        mlflow.log_dict({"stats": stats, "metrics": metrics}, "notifications.json")
    log.info("notifications %s: %s", dt, result.stats)
    summary = {**result.stats, **{k: v for k, v in metrics.items() if not isinstance(v, float) or np.isfinite(v)}}
    return StepResult(NAME, dt, {k: w.rows for k, w in written.items()}, summary, inputs.summary(),
                      **tracking.run_ids(active))
