"""The notification template language: placeholders, rendering, and the ops template file.

Ops templates come from a YAML file keyed by cluster id, then language ("*" = any language); for a
(cluster, language) they replace the automatic ones (built by :mod:`recsys_notify.global_medoids.templates`).

Templates may use placeholders ``{caption}``, ``{keyword}``, ``{keywords}`` and ``{creator}``.
:func:`render` always returns text without placeholders: missing values fall back to neutral
words and unknown or malformed placeholders are removed, because a push with ``{caption}`` in
it is worse than a slightly generic one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_notify.core.config import ConfigError, read_yaml
from recsys_notify.core.datasets import LANGUAGES

PLACEHOLDERS = {"caption", "keyword", "keywords", "creator"}
FALLBACK = {"caption": "a video picked for you", "keyword": "videos", "keywords": "videos you like",
            "creator": "a creator you watch"}
DEFAULT_TITLE = "Something new for you"
MAX_CAPTION = 90
COLUMNS = ["cluster_id", "language", "template_id", "title", "body", "source", "keywords"]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TemplateError(ConfigError):
    """The ops template file is invalid (a config error: never retried)."""


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


# ----- ops templates -----

def load_ops_templates(path: str | Path) -> pd.DataFrame:
    """Read and validate the ops YAML (``clusters: {id: {language: [{title, body}]}}``)."""

    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    data = read_yaml(path, TemplateError, "templates file") or {}
    clusters = data.get("clusters") or {} if isinstance(data, Mapping) else None
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
