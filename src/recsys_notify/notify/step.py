"""The notifications step: one message per eligible user for the run date.

Writes three partitions of ``dt``, each replaced whole on a rerun (so a retry never duplicates):
``outbox`` (messages, holdout rows flagged), ``delivery_log`` (one row per user and date) and
``delivery_feedback`` (whether yesterday's notified items were watched on ``dt``). History is
read from partitions before ``dt`` only, so rerunning a date reproduces the same outbox.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.config import Settings
from recsys_notify.notify.candidates import SOURCES
from recsys_notify.notify.delivery import (OUTBOX_COLUMNS, delivery_log, feedback, pick_templates,
                                           render_messages)
from recsys_notify.notify.eligibility import holdout
from recsys_notify.notify.inputs import Inputs, load_inputs
from recsys_notify.notify.ranking import TRANSPARENT_VERSION, load_ranker
from recsys_notify.notify.select import Choice, choose, in_sorted
from recsys_notify.storage import Storage, as_date

log = logging.getLogger(__name__)
CHAMPION = "champion"  # default ``ranker``: load the registry champion if there is one


def with_params(settings: Settings, params: dict[str, Any] | None) -> Settings:
    """Settings with ``notifications`` fields overridden by run params (validated like config)."""
    if not params:
        return settings
    merged = {**settings.notifications.model_dump(), **params}
    return settings.model_copy(update={"notifications": type(settings.notifications).model_validate(merged)})


def notify(storage: Storage, settings: Settings, dt: date | str, params: dict[str, Any] | None = None,
           ranker: Any = CHAMPION) -> dict[str, Any]:
    """Choose, render and write the day's notifications; returns counts for XCom and MLflow."""
    dt = as_date(dt)
    settings = with_params(settings, params)
    cfg = settings.notifications
    inputs = load_inputs(storage, settings, dt)
    if ranker == CHAMPION:
        ranker = load_ranker(settings)
    version = getattr(ranker, "version", None) if ranker is not None else TRANSPARENT_VERSION
    if ranker is not None:
        version = f"two_tower:{version}"

    n = len(inputs.user_ids)
    medoid_seeds = inputs.seeds.loc[inputs.seeds["kind"] == "medoid", "user_pos"].to_numpy()
    has_medoids = np.bincount(medoid_seeds, minlength=n) > 0
    capped = inputs.sent_counts >= cfg.frequency_cap
    target = ~capped & (has_medoids | (cfg.no_medoid_policy == "popular"))
    choice, ci = choose(inputs, cfg, target, storage, dt, ranker)
    choice.cluster = resolve_clusters(inputs, ci, choice.item, choice.cluster)

    outbox = build_outbox(inputs, choice, holdout(inputs.user_ids, cfg.holdout_percent, cfg.seed),
                          version, ranker is not None, settings)
    sent = inputs.yesterday_sent
    engaged = in_sorted(inputs.keys(np.searchsorted(inputs.user_ids, sent["user_id"].to_numpy(np.int64)),
                                    np.searchsorted(inputs.catalogue.item_ids, sent["item_id"].to_numpy(np.int64))),
                        inputs.today_watched) if len(sent) else np.zeros(0, bool)
    stats = {
        "date": dt.isoformat(), "model_version": version, **inputs.counts,
        "eligible_users": int(target.sum()), "capped_users": int(capped.sum()),
        "users_without_medoids": int((~has_medoids).sum()),
        "no_candidate_users": int(target.sum() - len(choice.user)),
        "notifications": int((~outbox["holdout"]).sum()), "holdout": int(outbox["holdout"].sum()),
        "sources": {SOURCES[k]: v for k, v in sorted(Counter(choice.source.tolist()).items())},
        "median_candidates": float(np.median(choice.candidates)) if len(choice.candidates) else 0.0,
        "lineage": {k: [d.isoformat() for d in v] for k, v in inputs.lineage.items()},
    }
    storage.write("outbox", dt, outbox, metadata=stats)
    storage.write("delivery_log", dt, delivery_log(outbox), metadata={"model_version": version})
    storage.write("delivery_feedback", dt, feedback(sent, engaged, dt - timedelta(days=1)))
    log.info("notifications %s: %s", dt, {k: v for k, v in stats.items() if k != "lineage"})
    return stats


def resolve_clusters(inputs: Inputs, ci: Any, items: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cluster position of each item: as retrieved, else from global_clusters, else the nearest cluster."""
    out = np.where(clusters >= 0, clusters, inputs.item_cluster[items])
    todo = np.flatnonzero(out < 0)
    if len(todo):
        uniq, inv = np.unique(items[todo], return_inverse=True)
        _, idx = ci.index.search(np.ascontiguousarray(inputs.catalogue.vectors[uniq]), 1)
        out[todo] = idx[inv, 0]
    return out


def build_outbox(inputs: Inputs, choice: Choice, held_out: np.ndarray, version: str, champion: bool,
                 settings: Settings) -> pd.DataFrame:
    cfg, cat = settings.notifications, inputs.catalogue
    item_ids = cat.item_ids[choice.item]
    cluster_ids = np.where(choice.cluster >= 0, inputs.cluster_ids[np.maximum(choice.cluster, 0)], -1)
    user_ids = inputs.user_ids[choice.user]
    lang = np.array(cat.languages + [None], dtype=object)[np.where(inputs.user_lang[choice.user] < 0, -1,
                                                                     inputs.user_lang[choice.user])]
    frame = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "cluster_id": cluster_ids})
    template_pos, templates = pick_templates(inputs.templates, user_ids, cluster_ids, lang, cfg.seed)
    frame = pd.concat([frame, render_messages(template_pos, templates, item_ids, cluster_ids, cat.frame)], axis=1)
    frame["date"] = inputs.dt
    frame["language"] = lang
    frame["thumbnail"] = [cfg.thumbnail_uri.format(item_id=i) for i in item_ids]
    frame["score"] = choice.score.astype(np.float64)
    frame["source"] = np.array(SOURCES)[choice.source]
    frame["model_version"] = version
    frame["reason"] = reasons(inputs, choice, cluster_ids, champion, version)
    frame["holdout"] = held_out[choice.user]
    return frame[OUTBOX_COLUMNS]  # choices come in user-position order, i.e. ascending user_id


def reasons(inputs: Inputs, choice: Choice, cluster_ids: np.ndarray, champion: bool, version: str) -> list[str]:
    """Human-readable why: source, seed item and similarity, popularity and age (and the model when used)."""
    cat = inputs.catalogue
    seeds = np.where(choice.seed >= 0, cat.item_ids[np.maximum(choice.seed, 0)], -1)
    pop, age = cat.pop[choice.item], cat.age_days[choice.item]
    head = f"{version} score; " if champion else ""
    return [
        f"{head}{SOURCES[s]}: cluster {c}"
        + (f", similarity {sim:.2f} to item {seed}" if seed >= 0 else "")
        + f", {p:.0f} recent positive views, {a:.1f} days old"
        for s, c, sim, seed, p, a in zip(choice.source.tolist(), cluster_ids.tolist(), choice.sim.tolist(),
                                         seeds.tolist(), pop.tolist(), age.tolist())
    ]
