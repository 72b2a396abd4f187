"""What the "Global medoids" page shows, computed from one refresh's frames (pure: frames in, rows out).

A refresh is the four datasets global_medoids writes for a date (``global_medoids``, ``global_clusters``,
``templates``, ``overrides``) plus the item catalogue as of that date and, for drift, the previous
refresh's representatives. Rows are plain JSON types, ready for the page's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.core.templates import render
from recsys_notify.global_medoids import overrides as ovr

MEMBERS_PREVIEW = 8


@dataclass
class Refresh:
    dt: date
    reps: pd.DataFrame  # global_medoids
    members: pd.DataFrame  # global_clusters
    templates: pd.DataFrame
    history: pd.DataFrame  # overrides (full audit history as of dt)
    items: pd.DataFrame  # item_id, language, caption, creator_id as of dt
    previous: pd.DataFrame | None  # the previous refresh's "*" rows (cluster_id, centroid, item_id)
    thumbnail_uri: str

    def __post_init__(self) -> None:
        self.by_id = self.items.drop_duplicates("item_id", keep="last").set_index("item_id")

    def active(self) -> pd.DataFrame:
        return ovr.active(self.history, self.dt)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """Every cluster's summary row, computed once per refresh (paging and search reuse it)."""
        return cluster_rows(self)


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else value


def _drift(refresh: Refresh) -> dict[int, float | None]:
    """Cosine distance of each cluster's centroid to the same id's previous centroid (None: new cluster)."""
    star = refresh.reps[refresh.reps["language"] == "*"]
    if refresh.previous is None or refresh.previous.empty:
        return {int(c): None for c in star["cluster_id"]}
    prev = dict(zip(refresh.previous["cluster_id"].astype(int), refresh.previous["centroid"]))
    out = {}
    for cid, centroid in zip(star["cluster_id"].astype(int), star["centroid"]):
        old = prev.get(cid)
        out[cid] = None if old is None else round(float(1.0 - np.dot(centroid, old)), 4)
    return out


def _keywords(templates: pd.DataFrame, top: int = 5) -> pd.Series:
    """Per cluster its most frequent keywords over every language's templates (a language may have none)."""
    words = templates[["cluster_id", "keywords"]].explode("keywords").dropna(subset=["keywords"])
    return words.groupby("cluster_id")["keywords"].agg(lambda s: list(s.value_counts().index[:top]))


def cluster_rows(refresh: Refresh, only: int | None = None) -> list[dict[str, Any]]:
    """One summary row per cluster (or just ``only``): size, languages, "*" representative, keywords, drift."""
    reps, members = refresh.reps, refresh.members
    if only is not None:
        reps, members = reps[reps["cluster_id"] == only], members[members["cluster_id"] == only]
    captions = refresh.by_id["caption"]
    keywords = _keywords(refresh.templates)
    active = refresh.active()
    replaced = active[active["action"] == "replace"].groupby("cluster_id")["override_id"].agg(list) if len(active) \
        else pd.Series(dtype=object)
    languages = reps[reps["language"] != "*"].groupby("cluster_id")["language"].agg(lambda s: sorted(map(str, s)))
    in_cluster = pd.concat([reps[["cluster_id", "item_id"]], members[["cluster_id", "item_id"]]]).groupby(
        "cluster_id")["item_id"].agg(lambda s: set(s.astype(int)))
    drift = _drift(refresh)
    star = reps[reps["language"] == "*"].sort_values("cluster_id")
    rows = []
    for cid, item, size, source in zip(star["cluster_id"].astype(int), star["item_id"].astype(int),
                                       star["cluster_size"].astype(int), star["source"].astype(str)):
        rows.append({
            "cluster_id": cid, "size": size, "languages": languages.get(cid, []), "item_id": item,
            "caption": str(captions.get(item, "")), "source": source,
            "keywords": [str(k) for k in keywords.get(cid, [])], "overrides": replaced.get(cid, []),
            "drift": drift.get(cid), "_items": in_cluster.get(cid, set()),
        })
    return rows


def search(rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Rows matching ``query``: a number matches a cluster id or any item in the cluster, text a keyword."""
    query = query.strip().lower()
    if not query:
        return rows
    if query.isdigit():
        number = int(query)
        return [r for r in rows if r["cluster_id"] == number or number in r["_items"]]
    return [r for r in rows if any(query in k.lower() for k in r["keywords"]) or query in r["caption"].lower()]


def page(rows: list[dict[str, Any]], number: int, size: int) -> dict[str, Any]:
    """One page (1-based) of ``rows`` without the search-only fields."""
    pages = max(1, -(-len(rows) // size))
    number = min(max(1, number), pages)
    chunk = rows[(number - 1) * size: number * size]
    return {"total": len(rows), "page": number, "pages": pages,
            "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in chunk]}


def _item(refresh: Refresh, item_id: int) -> dict[str, Any]:
    items = refresh.by_id
    known = item_id in items.index
    return {"item_id": item_id, "caption": str(items.at[item_id, "caption"]) if known else "",
            "language": str(items.at[item_id, "language"]) if known else None,
            "creator_id": int(items.at[item_id, "creator_id"]) if known else None,
            "image": refresh.thumbnail_uri.format(item_id=item_id)}


def override_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    cols = ["override_id", "action", "cluster_id", "language", "item_id", "requested_by", "reason", "created_dt",
            "expires", "run_id"]
    out = []
    for rec in frame.reindex(columns=cols).to_dict("records"):
        rec = {k: _none(v) for k, v in rec.items()}
        for key in ("cluster_id", "item_id"):
            rec[key] = None if rec[key] is None else int(rec[key])
        out.append(rec)
    return out


def cluster_detail(refresh: Refresh, cluster_id: int) -> dict[str, Any] | None:
    """Everything about one cluster: representatives per language, rendered templates, members, overrides."""
    group = refresh.reps[refresh.reps["cluster_id"] == cluster_id]
    if group.empty:
        return None
    summary = cluster_rows(refresh, only=cluster_id)[0]
    reps = []
    for r in group.sort_values("language").to_dict("records"):
        item = _item(refresh, int(r["item_id"]))
        reps.append({**item, "item_language": item["language"], "language": str(r["language"]),
                     "source": str(r["source"]), "override_id": _none(r["override_id"]),
                     "language_items": int(r["language_items"])})
    by_language = {r["language"]: r for r in reps}
    templates = []  # the pushes this cluster can send: its languages' templates and any ops one
    for t in refresh.templates[refresh.templates["cluster_id"] == cluster_id].to_dict("records"):
        if t["language"] not in by_language and t["source"] != "ops":
            continue
        t["keywords"] = list(t["keywords"]) if t["keywords"] is not None else []
        title, body = render(t, by_language.get(t["language"], by_language["*"]))
        templates.append({"template_id": t["template_id"], "language": t["language"], "source": t["source"],
                          "title": title, "body": body})
    members = refresh.members[refresh.members["cluster_id"] == cluster_id].sort_values(["distance", "item_id"])
    preview = [{**_item(refresh, int(r["item_id"])), "distance": round(float(r["distance"]), 4)}
               for r in members.head(MEMBERS_PREVIEW).to_dict("records")]
    active = refresh.active()
    if len(active):  # overrides of this cluster, and blocks of its items (cluster_id is null for a block)
        here = active["cluster_id"].eq(cluster_id).fillna(False).astype(bool)
        blocked = (active["action"] == "block") & active["item_id"].isin(list(summary["_items"])).astype(bool)
        active = active[here | blocked]
    return {**{k: v for k, v in summary.items() if not k.startswith("_")}, "representatives": reps,
            "templates": templates, "members": preview, "member_count": int(len(members)),
            "overrides": override_rows(active)}
