"""Automatic notification templates per global cluster (pure: cluster ids and captions in, rows out).

Each cluster's top keywords by class-based TF-IDF over its items' captions (one "document" per
cluster, so words common to every cluster score low) are baked into a few phrasing variants; ops
templates (:func:`recsys_notify.core.templates.load_ops_templates`) win for their (cluster, language).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_notify.core.templates import COLUMNS

AUTO_VARIANTS = [
    ("New {k0} for you", "Picked from what you watch: {caption}"),
    ("More {k0} and {k1}", "{caption} - and more {k1} waiting for you"),
    ("Your daily {k0}", "Fans of {k0} are watching: {caption}"),
]
_TOKEN = re.compile(r"[a-z][a-z']+")


def ctfidf_keywords(cluster_ids: np.ndarray, captions: Sequence[str], top: int = 3) -> dict[int, list[str]]:
    """Top ``top`` words per cluster by class-based TF-IDF (hashtags and case folded).

    Score = word frequency in the cluster x log(1 + average words per cluster / corpus frequency);
    words present in more than half of the clusters are dropped as non-distinctive.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    frame = pd.DataFrame({"cluster_id": cluster_ids, "caption": [str(c or "") for c in captions]})
    docs = frame.groupby("cluster_id")["caption"].agg(" ".join)
    if docs.empty:
        return {}
    vectorizer = CountVectorizer(token_pattern=_TOKEN.pattern, lowercase=True, stop_words="english")
    try:
        counts = vectorizer.fit_transform(docs.to_numpy()).astype(np.float64).toarray()
    except ValueError:  # no usable word in any caption
        return {int(c): [] for c in docs.index}
    words = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    avg_words = counts.sum() / len(docs)
    idf = np.log1p(avg_words / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    if len(docs) > 1:  # words in most clusters describe none of them (filler such as "wow", "new")
        scores[:, (counts > 0).sum(axis=0) > len(docs) / 2] = 0.0
    out = {}
    for row, cluster in enumerate(docs.index):
        order = np.lexsort((words, -scores[row]))
        out[int(cluster)] = [str(words[j]) for j in order[:top] if scores[row, j] > 0]
    return out


def auto_templates(keywords: Mapping[int, list[str]], variants: int = len(AUTO_VARIANTS)) -> pd.DataFrame:
    rows = []
    for cluster, words in sorted(keywords.items()):
        k0 = words[0] if words else "videos"
        k1 = words[1] if len(words) > 1 else k0
        for v, (title, body) in enumerate(AUTO_VARIANTS[:variants]):
            rows.append({"cluster_id": cluster, "language": "*", "template_id": f"auto-{cluster}-{v}",
                         "title": title.replace("{k0}", k0).replace("{k1}", k1),
                         "body": body.replace("{k0}", k0).replace("{k1}", k1), "source": "auto",
                         "keywords": list(words)})
    return pd.DataFrame(rows, columns=COLUMNS)


def build_templates(cluster_ids: np.ndarray, captions: Sequence[str], ops: pd.DataFrame, keywords_top: int = 3,
                    variants: int = len(AUTO_VARIANTS)) -> pd.DataFrame:
    """Templates for the clusters present: ops rows win over auto rows for the same (cluster, language)."""
    keywords = ctfidf_keywords(np.asarray(cluster_ids), captions, keywords_top)
    auto = auto_templates(keywords, variants)
    ops = ops[ops["cluster_id"].isin(list(keywords))].copy()
    ops["keywords"] = [keywords.get(int(c), []) for c in ops["cluster_id"]]
    ops_keys = set(zip(ops["cluster_id"], ops["language"]))
    auto = auto[[(c, lang) not in ops_keys for c, lang in zip(auto["cluster_id"], auto["language"])]]
    out = pd.concat([f for f in (ops, auto) if len(f)], ignore_index=True) if len(ops) + len(auto) else auto
    return out.astype({"cluster_id": "int64"}).sort_values(["cluster_id", "language", "template_id"]).reset_index(
        drop=True)
