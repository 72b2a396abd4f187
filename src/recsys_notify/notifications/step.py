"""The notifications step: one message per eligible user for the run date, sharded by user hash.

Resolves, once at the start of each task: user medoids of ``dt``; one global-medoid refresh (the
newest on or before ``dt``: its medoids, clusters, templates and overrides, all of that same date);
items, users and item vectors as of ``dt``; the history window of events; delivery logs and
feedback of earlier dates (so rerunning a date reproduces the same outbox); the champion's feature
window; and the events of ``dt + 1`` when they exist, for evaluation.

:func:`prepare` counts item popularity once (``item_popularity``, the one input every user shares:
the earlier days' saved ``item_positives`` plus the events of ``dt``); :func:`run_part` chooses the
messages of one shard of users, reading only their buckets of events, user medoids and delivery
history, and commits the shard's partial outbox and feedback; :func:`finish` writes ``outbox``,
``delivery_log`` and ``delivery_feedback`` of ``dt`` as one commit and logs counts, evaluation and
lineage to MLflow;
:func:`run` does all of it in one process (the CLI). The outbox does not depend on the shard count.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core import tracking
from recsys_notify.core.buckets import by_user_sorted, merge_bucketed, read_shard
from recsys_notify.core.config import NotificationSettings, Settings, resolve_path
from recsys_notify.core.datasets import (
    DELIVERY_FEEDBACK,
    DELIVERY_LOG,
    EVENTS,
    FRAMES,
    FRAMES_TRIMMED,
    GLOBAL_CLUSTERS,
    GLOBAL_MEDOIDS,
    ITEM_POPULARITY,
    ITEM_POSITIVES,
    ITEMS,
    OUTBOX,
    OVERRIDES,
    TEMPLATES,
    USER_MEDOIDS,
    USERS,
    shard_of,
)
from recsys_notify.core.embeddings import VECTORS, item_vectors, vectors_request
from recsys_notify.core.inputs import Inputs, as_of, between, day, newest, resolve, window
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import MissingPartitionError, Partition, Storage
from recsys_notify.core.templates import load_phrases
from recsys_notify.notifications import arrays
from recsys_notify.notifications.daily import Decision, combine_stats, decide, render
from recsys_notify.notifications.delivery import delivery_log
from recsys_notify.notifications.evaluation import hit_counts, outbox_metrics, rates
from recsys_notify.notifications.frames import Keyframes
from recsys_notify.notifications.ranking import TRANSPARENT_VERSION

NAME = "notifications"
EXECUTION = {"shards", "shard_users"}  # how the work is split: the outbox does not depend on them
CHAMPION = "champion"
OUTBOX_ORDER, FEEDBACK_ORDER = ["user_id"], ["user_id", "item_id"]  # row order inside each user bucket
log = logging.getLogger(__name__)


def load_champion(settings: Settings) -> Any:
    """The registry's champion (unbound), or None when there is none or ``use_champion`` is off."""
    if not settings.notifications.use_champion:
        return None
    from recsys_notify.two_tower.serving import load_champion as load

    return load(settings)


def _settings(settings: Settings, params: dict[str, Any] | None) -> Settings:
    return parse_params(settings, NAME, params)[0]


def run_params(settings: Settings) -> dict[str, Any]:
    """What a shard's output depends on (every shard of one date must agree)."""
    return {**settings.notifications.model_dump(exclude=EXECUTION), "embedding_source": settings.embedding.source,
            "trimmed_dim": settings.embedding.trimmed_dim}


def popularity_params(cfg: NotificationSettings) -> dict[str, Any]:
    """What ``item_popularity`` depends on (checked by every shard that reads it)."""
    return {"popularity_days": cfg.popularity_days, "positive_completion": cfg.positive_completion}


def resolve_inputs(storage: Storage, settings: Settings, dt: date, champion: Any = None,
                   popularity: bool = False, daily_counts: bool = False) -> Inputs:
    """Everything one task reads; the refresh's tables are pinned to the date of its global medoids.

    ``popularity``: ``item_popularity`` of ``dt`` and the trimmed keyframes (a shard); ``daily_counts``:
    the ``item_positives`` of the earlier popularity days that exist (``prepare``).
    """
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
    if popularity:
        requests["item_popularity"] = day(ITEM_POPULARITY, dt)
        requests["frames_trimmed"] = as_of(FRAMES_TRIMMED, dt, required=False)
    if daily_counts:
        requests["item_positives"] = between(ITEM_POSITIVES, dt - timedelta(days=cfg.popularity_days - 1),
                                             dt - timedelta(days=1))
    if champion is not None:
        requests |= champion.requests(dt)
    return resolve(storage, requests)


def read_tables(inputs: Inputs, settings: Settings, dt: date, shard: tuple[int, int] | None = None) -> arrays.Tables:
    """Read the resolved partitions, each with only the columns it is used for.

    ``shard=(s, n)``: the per-user inputs hold only the users of shard ``s`` of ``n`` (read from their
    buckets), popularity comes from ``item_popularity`` and keyframes are left to :func:`chosen_keyframes`;
    without it everything is read.
    """
    cfg, cols = settings.notifications, arrays.COLUMNS
    def events_of(p: Partition) -> pa.Table:
        columns = arrays.event_columns((dt - p.dt).days, cfg)
        return inputs.storage.read_partition(p, columns) if shard is None else read_shard(inputs.storage, p, columns,
                                                                                          *shard)

    events = [((dt - p.dt).days, events_of(p)) for p in inputs["events"].partitions]
    return arrays.Tables(
        user_medoids=inputs.frame("user_medoids", cols["user_medoids"], shard),
        global_medoids=inputs.frame("global_medoids", cols["global_medoids"]),
        global_clusters=inputs.frame("global_clusters", cols["global_clusters"]),
        templates=inputs.frame("templates", cols["templates"]),
        overrides=inputs.frame("overrides", cols["overrides"]) if inputs["overrides"].partitions else None,
        items=inputs.dimension("items", cols["items"]),
        vectors=item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim),
        users=inputs.dimension("users", cols["users"], shard=shard),
        events=events,
        delivery_log=[((dt - p.dt).days, t.to_pandas())
                      for p, t in inputs.tables("delivery_log", cols["delivery_log"], shard)],
        delivery_feedback=[t.to_pandas() for _, t in inputs.tables("delivery_feedback", cols["delivery_feedback"],
                                                                   shard)],
        frames=inputs.dimension("frames", cols["frames"]) if inputs["frames"].partitions and shard is None else None,
        content=None if settings.embedding.source == "content" or not inputs["frames"].partitions
        else item_vectors(inputs, "content", settings.embedding.trimmed_dim, role="items"),
        popularity=inputs.frame("item_popularity") if shard is not None else None,
    )


def chosen_keyframes(inputs: Inputs, dense: arrays.Arrays, decision: Decision) -> Keyframes | None:
    """The keyframes of the items chosen for messages only: a shard never holds every item's frames.

    They come from ``frames_trimmed`` when it has a current twin of every frames partition, wide
    enough for the content vectors (the same rows and floats, ~8x less to decode), else from ``frames``.
    """
    if not inputs["frames"].partitions:
        return None
    dim = dense.content.shape[1]
    twins = {p.dt: p for p in inputs["frames_trimmed"].partitions} if "frames_trimmed" in inputs else {}
    trimmed = set(twins) == set(inputs["frames"].dates) and all(
        _derived_from(twins[p.dt], "frames") == p.version and twins[p.dt].metadata.get("trimmed_dim", 0) >= dim
        for p in inputs["frames"].partitions)
    chosen = pa.array(np.unique(dense.catalogue.item_ids[decision.choice.item]), pa.int64())
    frames = inputs.dimension("frames_trimmed" if trimmed else "frames", arrays.COLUMNS["frames"],
                              where=("item_id", chosen))
    return arrays.keyframes(frames, dense.catalogue, dim)


def parts(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> list[int]:
    return list(range(_settings(settings, params).notifications.shards))


def prepare(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check that every input of ``dt`` is there, then commit ``item_popularity`` of ``dt`` (before the shards).

    Each popularity day's positives come from its ``item_positives`` when that was counted from the
    events version pinned now with the same rule, else from its events (engagement columns only,
    streamed in batches). The day ``dt`` is always counted and committed as ``item_positives``, so a
    daily run scans one day of events, not ``popularity_days``; its frames partition, if any, is
    committed trimmed (``frames_trimmed``, see :func:`chosen_keyframes`).
    """
    settings = _settings(settings, params)
    cfg = settings.notifications
    inputs = resolve_inputs(storage, settings, dt, daily_counts=True)
    saved = {p.dt: p for p in inputs["item_positives"].partitions}
    lineage = {(r["role"], r["dt"]): r for r in inputs.lineage()}
    days, read, counted = [], [], 0
    for p in inputs["events"].partitions:
        if (dt - p.dt).days >= cfg.popularity_days:
            continue
        kept = saved.get(p.dt)
        if kept is not None and (_derived_from(kept, "events"), kept.metadata.get("params")) == \
                (p.version, popularity_params(cfg)):
            days.append(storage.read_partition(kept, ["item_id", "positives"]).to_pandas())
            read.append(lineage[("item_positives", kept.dt.isoformat())])
            continue
        days.append(_positives(storage, p, cfg))
        read.append(lineage[("events", p.dt.isoformat())])
        counted += 1
    counts = arrays.sum_positives(days)
    outputs, meta = _day_outputs(storage, settings, inputs, lineage, dt, days[-1])  # the window ends on dt
    storage.write_many(dt, {**outputs, ITEM_POPULARITY.name: counts}, {"params": popularity_params(cfg)},
                       {**meta, ITEM_POPULARITY.name: {"inputs": read}})
    return {"items": len(counts), "positives": int(counts["positives"].sum()), "event_days_scanned": counted}


def commit_day(storage: Storage, settings: Settings, d: date) -> list[str]:
    """Commit what the ``prepare`` of ``d`` derives from ``d`` alone (``item_positives``, ``frames_trimmed``).

    For days whose runs have not happened: a backfill counted ahead, frames that landed after their
    day's run, or a benchmark's earlier days. Returns the datasets written.
    """
    cfg = settings.notifications
    inputs = resolve(storage, {"events": day(EVENTS, d, required=False), "frames": day(FRAMES, d, required=False)})
    if not inputs["events"].partitions and not inputs["frames"].partitions:
        raise MissingPartitionError(f"events and frames have no partition for {d}: nothing to derive")
    positives = [_positives(storage, p, cfg) for p in inputs["events"].partitions]
    lineage = {(r["role"], r["dt"]): r for r in inputs.lineage()}
    outputs, meta = _day_outputs(storage, settings, inputs, lineage, d, positives[0] if positives else None)
    storage.write_many(d, outputs, {"params": popularity_params(cfg)}, meta)
    return list(outputs)


def _day_outputs(storage: Storage, settings: Settings, inputs: Inputs, lineage: dict[tuple[str, str], Any],
                 d: date, positives: pd.DataFrame | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``item_positives`` of ``d`` (given its ``positives``) and, when ``d`` has a frames partition, its
    ``frames_trimmed``, each with its metadata (``lineage``: the inputs' records by role and date)."""
    outputs: dict[str, Any] = {}
    meta: dict[str, dict[str, Any]] = {}
    if positives is not None:
        outputs[ITEM_POSITIVES.name] = positives
        meta[ITEM_POSITIVES.name] = {"inputs": [lineage[("events", d.isoformat())]]}
    frames = [p for p in inputs["frames"].partitions if p.dt == d]
    if frames:
        dim = settings.embedding.trimmed_dim
        outputs[FRAMES_TRIMMED.name] = (
            pa.Table.from_batches([batch.set_column(batch.schema.get_field_index("embedding"), "embedding",
                                                    pc.list_slice(batch.column("embedding"), 0, dim))])
            for batch in storage.iter_batches(frames[0], arrays.COLUMNS["frames"]))
        meta[FRAMES_TRIMMED.name] = {"inputs": [lineage[("frames", d.isoformat())]], "trimmed_dim": dim}
    return outputs, meta


def _positives(storage: Storage, events: Partition, cfg: NotificationSettings) -> pd.DataFrame:
    """Positives per item of one day's events, from the engagement columns streamed in batches."""
    return arrays.count_positives(storage.iter_batches(events, ["item_id", "completion", "liked", "shared"]), cfg)


def _derived_from(partition: Partition, role: str) -> str | None:
    """The version of the one ``role`` input a derived partition was made from (None: not recorded)."""
    found = [r for r in partition.metadata.get("inputs", []) if r.get("role") == role]
    return found[0].get("version") if len(found) == 1 else None


def run_part(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None, shard: int
             ) -> dict[str, Any]:
    """Choose and render the messages of one shard of users; commit the shard's partial outbox and feedback."""
    settings = _settings(settings, params)
    cfg = settings.notifications
    if not 0 <= shard < cfg.shards:
        raise ValueError(f"shard {shard} out of range 0..{cfg.shards - 1}")
    phrases = load_phrases(resolve_path(settings.global_medoids.phrases_path))
    champion = load_champion(settings)
    inputs = resolve_inputs(storage, settings, dt, champion, popularity=True)
    counted = inputs["item_popularity"].partitions[0].metadata.get("params")
    if counted != popularity_params(cfg):
        raise ValueError(f"item_popularity of {dt} was counted with {counted}, this run uses "
                         f"{popularity_params(cfg)}: rerun the whole run (its prepare task first)")
    dense = arrays.build(read_tables(inputs, settings, dt, (shard, cfg.shards)), settings, dt)
    ranker = champion.bind(inputs) if champion is not None else None
    version = f"two_tower:{champion.version}" if champion is not None else TRANSPARENT_VERSION
    decision = decide(dense, settings, ranker)
    dense.keyframes = chosen_keyframes(inputs, dense, decision)
    result = render(dense, decision, settings, version, ranker is not None, phrases)
    evaluated = cfg.evaluate and bool(inputs["next_day"].partitions) and not result.outbox.empty
    hits = hit_counts(dense, result.index, result.outbox,
                      inputs.frame("next_day", ["user_id", "item_id", "completion", "liked"], (shard, cfg.shards)),
                      cfg) if evaluated else None
    meta = {"stats": result.stats, "hits": hits, "clusters": len(dense.cluster_ids), "params": run_params(settings),
            "model_version": version, "shard": shard, "shards": cfg.shards, "inputs": inputs.lineage()}
    outbox, layout = by_user_sorted(result.outbox, OUTBOX_ORDER, settings.event_buckets)
    feedback, _ = by_user_sorted(result.feedback, FEEDBACK_ORDER, settings.event_buckets)
    storage.write_many(dt, {shard_of(OUTBOX, shard, cfg.shards).name: outbox,
                            shard_of(DELIVERY_FEEDBACK, shard, cfg.shards).name: feedback}, {**meta, **layout})
    return {"shard": shard, "shards": cfg.shards, "notifications": result.stats["notifications"]}


def finish(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None,
           part_results: list[dict[str, Any]] | None = None) -> StepResult:
    """Commit ``outbox``, ``delivery_log`` and ``delivery_feedback`` of ``dt`` from every shard; track the run."""
    import mlflow

    settings = _settings(settings, params)
    cfg = settings.notifications
    n = cfg.shards
    inputs = resolve(storage, {
        **{f"outbox_{s}": day(shard_of(OUTBOX, s, n), dt) for s in range(n)},
        **{f"feedback_{s}": day(shard_of(DELIVERY_FEEDBACK, s, n), dt) for s in range(n)},
    })
    metas = [inputs[f"outbox_{s}"].partitions[0].metadata for s in range(n)]
    expected = run_params(settings)
    for s, meta in enumerate(metas):
        if meta.get("params") != expected or meta.get("model_version") != metas[0]["model_version"]:
            raise ValueError(f"shard {s} of {dt} was computed with other parameters or another model than shard 0; "
                             "rerun all shards")
    read = [r for meta in metas for r in meta["inputs"]]
    if len({(r["dataset"], r["dt"], r["version"]) for r in read if r["role"] == "item_popularity"}) != 1:
        raise ValueError(f"the shards of {dt} read different item_popularity versions; rerun all shards")
    buckets = settings.event_buckets
    outbox = merge_bucketed([(inputs.table(f"outbox_{s}"), metas[s]) for s in range(n)], OUTBOX_ORDER, buckets)
    feedback = merge_bucketed([(inputs.table(f"feedback_{s}"), inputs[f"feedback_{s}"].partitions[0].metadata)
                               for s in range(n)], FEEDBACK_ORDER, buckets)
    version = metas[0]["model_version"]
    stats = combine_stats([m["stats"] for m in metas])
    hits = [m["hits"] for m in metas if m["hits"] is not None]
    metrics = outbox_metrics(outbox.select(["holdout", "item_id", "cluster_id", "source"]).to_pandas(),
                             metas[0]["clusters"], bool(hits))
    metrics |= rates({k: sum(h[k] for h in hits) for k in hits[0]}) if hits else {"evaluated_users": 0}
    lineage = list({(r["role"], r["dataset"], r["dt"]): r for r in read}.values())
    stats = {**{k: v for k, v in stats.items() if k != "candidates_hist"}, "shards": n,
             "lineage": _lineage_summary(lineage)}
    with tracking.tracked_run(cfg.experiment, f"{NAME}-{dt}",
                              params={**cfg.model_dump(), "embedding_source": settings.embedding.source,
                                      "model_version": version},
                              tags={"dt": dt.isoformat(), "step": NAME}, settings=settings) as active:
        tables = {OUTBOX.name: outbox, DELIVERY_LOG.name: delivery_log(outbox), DELIVERY_FEEDBACK.name: feedback}
        written = storage.write_many(dt, tables, {"model_version": version, "buckets": buckets}, {OUTBOX.name: stats})
        tracking.log_records(lineage)
        numeric = {k: float(v) for k, v in {**stats, **metrics}.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        rows = max(len(outbox), 1)  # language, text fallback and image source as shares of the outbox
        numeric |= {f"share_{k}": v / rows for k, v in numeric.items()
                    if k.startswith(("text_", "language_", "frame_", "creator_boosted"))}
        mlflow.log_metrics(numeric)
        mlflow.log_dict({"stats": stats, "metrics": metrics}, "notifications.json")
    log.info("notifications %s: %s", dt, stats)
    summary = {**{k: v for k, v in stats.items() if k != "lineage"},
               **{k: v for k, v in metrics.items() if not isinstance(v, float) or np.isfinite(v)}}
    return StepResult(NAME, dt, {k: w.rows for k, w in written.items()}, summary, stats["lineage"],
                      **tracking.run_ids(active))


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Popularity, every shard, then the combined outputs, in this process (the DAG maps shards over workers)."""
    prepare(storage, settings, dt, params)
    results = [run_part(storage, settings, dt, params, shard) for shard in parts(storage, settings, dt, params)]
    return finish(storage, settings, dt, params, results)


def _lineage_summary(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Role -> partition dates read, like :meth:`Inputs.summary` (shards read the same partitions)."""
    out: dict[str, list[str]] = {}
    for r in records:
        out.setdefault(r["role"], []).append(r["dt"])
    return {role: sorted(set(dates)) for role, dates in out.items()}
