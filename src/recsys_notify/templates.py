"""Notification text per global cluster: automatic keyword templates plus ops-authored ones.

Automatic templates take each cluster's top keywords by class-based TF-IDF over its items'
captions (one "document" per cluster, so words common to every cluster score low) and bake them
into a few phrasing variants. Ops templates come from a YAML file keyed by cluster id, then
language ("*" = any language); for a (cluster, language) they replace the automatic ones.

Templates may use placeholders ``{caption}``, ``{keyword}``, ``{keywords}`` and ``{creator}``.
:func:`render` always returns text without placeholders: missing values fall back to neutral
words and unknown or malformed placeholders are removed, because a push with ``{caption}`` in
it is worse than a slightly generic one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.contract import LANGUAGES

PLACEHOLDERS = {"caption", "keyword", "keywords", "creator"}
FALLBACK = {"caption": "a video picked for you", "keyword": "videos", "keywords": "videos you like",
            "creator": "a creator you watch"}
DEFAULT_TITLE = "Something new for you"
MAX_CAPTION = 90
COLUMNS = ["cluster_id", "language", "template_id", "title", "body", "source", "keywords"]
AUTO_VARIANTS = [
    ("New {k0} for you", "Picked from what you watch: {caption}"),
    ("More {k0} and {k1}", "{caption} - and more {k1} waiting for you"),
    ("Your daily {k0}", "Fans of {k0} are watching: {caption}"),
]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TOKEN = re.compile(r"[a-z][a-z']+")


class TemplateError(ValueError):
    """The ops template file is invalid."""


# ----- rendering -----

def _value(name: str, template: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    keywords = [str(k) for k in (template.get("keywords") if template.get("keywords") is not None else [])]
    if name == "caption":
        text = str(item.get("caption") or "").strip()
        return (text[:MAX_CAPTION - 1].rstrip() + "…") if len(text) > MAX_CAPTION else text
    if name == "keyword":
        return keywords[0] if keywords else ""
    if name == "keywords":
        return ", ".join(keywords[:3])
    if name == "creator":
        creator = item.get("creator_name") or (f"creator {item['creator_id']}" if item.get("creator_id") is not None
                                               else "")
        return str(creator)
    return ""


def _fill(text: str, template: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = re.split(r"[!:\s]", match.group(1).strip(), maxsplit=1)[0]
        value = _value(name, template, item) if name in PLACEHOLDERS else ""
        return value or (FALLBACK.get(name, "") if name in PLACEHOLDERS else "")

    filled = _PLACEHOLDER.sub(sub, str(text or ""))
    filled = filled.replace("{", "").replace("}", "")
    return re.sub(r"\s+([,.!?:])", r"\1", re.sub(r"\s{2,}", " ", filled)).strip(" -:,")


def render(template: Mapping[str, Any], item: Mapping[str, Any]) -> tuple[str, str]:
    """``(title, body)`` for one item; never contains an unfilled placeholder or a brace."""
    title = _fill(template.get("title"), template, item) or DEFAULT_TITLE
    body = _fill(template.get("body"), template, item) or _fill("{caption}", template, item)
    return title, body


# ----- automatic templates -----

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


# ----- ops templates -----

def load_ops_templates(path: str | Path) -> pd.DataFrame:
    """Read and validate the ops YAML (``clusters: {id: {language: [{title, body}]}}``)."""
    import yaml

    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    data = yaml.safe_load(path.read_text()) or {}
    clusters = data.get("clusters") or {}
    if not isinstance(clusters, Mapping):
        raise TemplateError(f"{path}: 'clusters' must map cluster id -> language -> list of templates")
    rows = []
    for cid, by_language in clusters.items():
        where = f"{path}: cluster {cid}"
        if isinstance(cid, bool) or not str(cid).lstrip("-").isdigit():
            raise TemplateError(f"{where}: cluster id must be an integer")
        if not isinstance(by_language, Mapping):
            raise TemplateError(f"{where}: expected a mapping of language -> templates")
        for language, entries in by_language.items():
            if language != "*" and language not in LANGUAGES:
                raise TemplateError(f"{where}: unknown language {language!r} (use a code such as 'en' or '*')")
            for n, entry in enumerate(entries if isinstance(entries, list) else [entries]):
                rows.append(_ops_row(int(cid), str(language), n, entry, f"{where} language {language} #{n}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _ops_row(cluster: int, language: str, n: int, entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or not str(entry.get("title") or "").strip() or not str(
            entry.get("body") or "").strip():
        raise TemplateError(f"{where}: needs non-empty 'title' and 'body'")
    for part in ("title", "body"):
        text = str(entry[part])
        names = {m.strip() for m in _PLACEHOLDER.findall(text)}
        unknown = names - PLACEHOLDERS
        if unknown or text.count("{") != text.count("}"):
            raise TemplateError(f"{where}: {part} uses unknown or malformed placeholder(s) {sorted(unknown) or text!r}"
                                f"; allowed: {sorted(PLACEHOLDERS)}")
    return {"cluster_id": cluster, "language": language, "template_id": f"ops-{cluster}-{language}-{n}",
            "title": str(entry["title"]).strip(), "body": str(entry["body"]).strip(), "source": "ops", "keywords": []}


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


def resolve_path(path: str) -> Path:
    """Relative template paths resolve against the working directory, else the project root."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return Path(__file__).resolve().parents[2] / path
