"""Test-only stand-ins for the medoid pipeline's outputs, built from the synthetic world.

They follow the documented schemas (COMMON.md) but use the simplest possible method: a faiss
KMeans over item vectors gives global clusters; a user's medoids are their most engaged item in
each of their top clusters. The real producers live in the user_medoids / global_medoids steps.
"""

from __future__ import annotations

from datetime import date, timedelta

import faiss
import numpy as np
import pandas as pd

from recsys_notify.core.config import resolve_path
from recsys_notify.core.embeddings import VECTORS, item_vectors, vectors_request
from recsys_notify.core.inputs import resolve
from recsys_notify.core.storage import Storage
from recsys_notify.core.templates import COLUMNS, load_phrases
from recsys_notify.global_medoids.templates import build_templates
from tests.frames import span, upto

LANGS_WITH_OPS_TEMPLATE = ("en",)


def build_upstream(storage: Storage, dt: date, k: int = 40, medoids_per_user: int = 3, dim: int = 16,
                   without_medoids: int = 0) -> dict[str, pd.DataFrame]:
    """Write user_medoids, global_medoids, global_clusters and templates partitions for ``dt``.

    ``without_medoids`` users (the last ones by id) get no medoid rows, to exercise that policy.
    """
    ids, vec = item_vectors(resolve(storage, {VECTORS: vectors_request("content", dt)}), "content", dim)
    km = faiss.Kmeans(dim, k, niter=10, seed=1)
    km.train(vec)
    dist, assign = km.index.search(vec, 1)
    item_cluster = pd.DataFrame({"item_id": ids, "cluster": assign[:, 0], "distance": dist[:, 0]})
    items = upto(storage, "items", dt, columns=["item_id", "language", "caption"])

    events = span(storage, "events", dt - timedelta(days=13), dt,
                                columns=["user_id", "item_id", "completion", "liked"])
    pos = events[(events["completion"] > 0.9) | events["liked"]].merge(item_cluster, on="item_id")
    per_item = pos.groupby(["user_id", "cluster", "item_id"]).size().rename("n").reset_index()
    per_item = per_item.sort_values(["user_id", "cluster", "n", "item_id"], ascending=[True, True, False, True])
    medoid = per_item.drop_duplicates(["user_id", "cluster"])
    size = per_item.groupby(["user_id", "cluster"])["n"].sum().rename("cluster_size").reset_index()
    um = medoid.merge(size, on=["user_id", "cluster"]).sort_values(["user_id", "cluster_size", "cluster"],
                                                                     ascending=[True, False, True])
    um["rank"] = um.groupby("user_id").cumcount()
    um = um[um["rank"] < medoids_per_user]
    if without_medoids:
        um = um[~um["user_id"].isin(np.sort(um["user_id"].unique())[-without_medoids:])]
    total = um.groupby("user_id")["cluster_size"].transform("sum")
    user_medoids = pd.DataFrame({
        "user_id": um["user_id"].astype("int64"), "item_id": um["item_id"].astype("int64"),
        "cluster_id": um["rank"].astype("int64"), "cluster_size": um["cluster_size"].astype("int64"),
        "weight": (um["cluster_size"] / total).astype("float64"),
        "importance": um["cluster_size"].astype("float64"), "rank": um["rank"].astype("int64"),
    }).reset_index(drop=True)

    # representative per cluster ("*") and per language present: the member nearest the centroid
    reps = item_cluster.merge(items, on="item_id").sort_values(["cluster", "distance", "item_id"])
    star = reps.drop_duplicates("cluster").assign(row_language="*")
    by_lang = reps.drop_duplicates(["cluster", "language"]).assign(row_language=reps["language"])
    rows = pd.concat([star, by_lang])
    vec_of = dict(zip(ids.tolist(), vec))
    global_medoids = pd.DataFrame({
        "cluster_id": rows["cluster"].astype("int64"), "language": rows["row_language"].astype(str),
        "item_id": rows["item_id"].astype("int64"),
        "cluster_size": rows["cluster"].map(item_cluster["cluster"].value_counts()).astype("int64"),
        "vector": [vec_of[i] for i in rows["item_id"]], "source": "kmeans",
    }).reset_index(drop=True)

    member_items = user_medoids["item_id"].unique()
    gc = item_cluster[item_cluster["item_id"].isin(member_items)]
    global_clusters = pd.DataFrame({"item_id": gc["item_id"].astype("int64"),
                                    "cluster_id": gc["cluster"].astype("int64"),
                                    "distance": gc["distance"].astype("float64")}).reset_index(drop=True)

    # automatic templates from the clusters' same-language captions, as global_medoids builds them, plus
    # an English ops template per cluster (with an unknown placeholder, which rendering must drop)
    clusters = np.arange(k)
    captioned = item_cluster.merge(items, on="item_id")
    auto = build_templates(captioned["cluster"].to_numpy(), captioned["caption"].tolist(),
                           captioned["language"].tolist(), pd.DataFrame(columns=COLUMNS),
                           load_phrases(resolve_path("configs/phrases.yaml")))
    auto = auto[auto["language"] != "en"]
    templates = pd.concat([
        auto,
        pd.DataFrame({"cluster_id": clusters, "language": "en", "template_id": [f"ops-{c}-en" for c in clusters],
                      "title": "Trending in {missing_field} your feed", "body": "Watch: {caption}", "source": "ops",
                      "keywords": [[]] * k}),
    ]).reset_index(drop=True)
    out = {"user_medoids": user_medoids, "global_medoids": global_medoids, "global_clusters": global_clusters,
           "templates": templates}
    for name, frame in out.items():
        storage.write(name, dt, frame)
    return out
