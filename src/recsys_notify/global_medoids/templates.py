"""Automatic notification templates per (global cluster, language) (pure: ids, captions, languages in; rows out).

For each contract language, the cluster's top keywords come from class-based TF-IDF over the captions
of its items **in that language** (one "document" per cluster, so words common to every cluster score
low). A title is one of that language's reviewed phrases (``configs/phrases.yaml``) with the top
keyword; the body is the item's own caption (``{caption}``, cleaned and cut when rendered). A cluster
with no caption in a language gets the language's generic title. Ops templates
(:func:`recsys_notify.core.templates.load_ops_templates`) win for their (cluster, language).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_notify.core.templates import COLUMNS, Phrases

# a word: two or more characters that are not whitespace, digits, ASCII punctuation (``#`` included) or emoji
TOKEN = r"[^\s\d!-/:-@\[-`{-~\u2600-\u27bf\u200d\ufe0f\U0001f000-\U0001faff]{2,}"


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
    vectorizer = CountVectorizer(token_pattern=TOKEN, lowercase=True, stop_words="english")
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


def auto_templates(clusters: Sequence[int], language: str, keywords: Mapping[int, list[str]], phrases: Phrases,
                   variants: int = 3) -> pd.DataFrame:
    """Rows of one language: a phrase with the top keyword per variant, or the generic title without one."""
    rows = []
    for cluster in sorted(int(c) for c in clusters):
        words = list(keywords.get(cluster, []))
        titles = [t.replace("{keyword}", words[0]) for t in phrases.titles[:variants]] if words else [
            phrases.generic_title]
        for v, title in enumerate(titles):
            rows.append({"cluster_id": cluster, "language": language,
                         "template_id": f"auto-{cluster}-{language}-{v if words else 'generic'}",
                         "title": title, "body": "{caption}", "source": "auto", "keywords": words})
    return pd.DataFrame(rows, columns=COLUMNS)


def build_templates(cluster_ids: np.ndarray, captions: Sequence[str], languages: Sequence[str], ops: pd.DataFrame,
                    phrases: Mapping[str, Phrases], keywords_top: int = 3, variants: int = 3) -> pd.DataFrame:
    """Templates for the clusters present, for every language of the phrase table; ops rows win per language."""
    cluster_ids, languages = np.asarray(cluster_ids), np.asarray(languages, dtype=object)
    captions = np.asarray([str(c or "") for c in captions], dtype=object)
    clusters = np.unique(cluster_ids)
    auto = [auto_templates(clusters, lang, ctfidf_keywords(cluster_ids[languages == lang],
                                                           captions[languages == lang].tolist(), keywords_top),
                           words, variants) for lang, words in sorted(phrases.items())]
    auto_rows = pd.concat(auto, ignore_index=True) if auto else pd.DataFrame(columns=COLUMNS)
    keywords = {(int(c), lang): kw for c, lang, kw in zip(auto_rows["cluster_id"], auto_rows["language"],
                                                           auto_rows["keywords"])}
    keywords |= {(c, "*"): kw for c, kw in ctfidf_keywords(cluster_ids, captions.tolist(), keywords_top).items()}
    ops = ops[ops["cluster_id"].isin(clusters.tolist())].copy()
    ops["keywords"] = [keywords.get((int(c), lang), []) for c, lang in zip(ops["cluster_id"], ops["language"])]
    ops_keys = set(zip(ops["cluster_id"], ops["language"]))
    auto_rows = auto_rows[[(c, lang) not in ops_keys for c, lang in zip(auto_rows["cluster_id"],
                                                                       auto_rows["language"])]]
    out = pd.concat([f for f in (ops, auto_rows) if len(f)], ignore_index=True) if len(ops) + len(auto_rows) \
        else auto_rows
    return out.astype({"cluster_id": "int64"}).sort_values(["cluster_id", "language", "template_id"]).reset_index(
        drop=True)
