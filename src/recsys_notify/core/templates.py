"""The notification template language: placeholders, rendering, and the ops template file.

Ops templates come from a YAML file keyed by cluster id, then language ("*" = any language); for a
(cluster, language) they replace the automatic ones (built by :mod:`recsys_notify.global_medoids.templates`).

Templates may use placeholders ``{caption}``, ``{keyword}``, ``{keywords}`` and ``{creator}``.
:func:`render` always returns text without placeholders: missing values fall back to neutral
words and unknown or malformed placeholders are removed, because a push with ``{caption}`` in
it is worse than a slightly generic one. Rendered text is cleaned (:mod:`recsys_notify.core.text`:
no control or bidi characters, no repeated words) and fitted to the platform limits. Ops templates
must pass :func:`lint` when the file is loaded; the per-language wording of automatic templates comes
from the phrase table (``configs/phrases.yaml``, :func:`load_phrases`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_notify.core.config import ConfigError, read_yaml
from recsys_notify.core.datasets import LANGUAGES
from recsys_notify.core.text import BODY_MAX, TITLE_MAX, clean, drop_repeated_words, fit, repeated_words, word_key

PLACEHOLDERS = {"caption", "keyword", "keywords", "creator"}
FALLBACK = {"caption": "a video picked for you", "keyword": "videos", "keywords": "videos you like",
            "creator": "a creator you watch"}
DEFAULT_TITLE = "Something new for you"
LIMITS = {"title": TITLE_MAX, "body": BODY_MAX}
PLACEHOLDER_ROOM = 10  # characters a placeholder's value is expected to need at least (linter)
COLUMNS = ["cluster_id", "language", "template_id", "title", "body", "source", "keywords"]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TemplateError(ConfigError):
    """The ops template file is invalid (a config error: never retried)."""


# ----- rendering -----

@dataclass(frozen=True)
class Phrases:
    """Reviewed wording of one language: title variants with ``{keyword}``, and texts without a keyword."""

    titles: tuple[str, ...]
    generic_title: str
    generic_body: str


def caption_text(caption: object) -> str:
    """An item's caption as push text: cleaned, repeated words dropped, cut at a word boundary."""
    return fit(drop_repeated_words(clean(caption)), BODY_MAX)


def _value(name: str, template: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    keywords = [str(k) for k in (template.get("keywords") if template.get("keywords") is not None else [])]
    if name == "caption":
        return caption_text(item.get("caption"))
    if name == "keyword":
        return keywords[0] if keywords else ""
    if name == "keywords":
        return ", ".join(keywords[:3])
    if name == "creator":
        creator = item.get("creator_name") or (f"creator {item['creator_id']}" if item.get("creator_id") is not None
                                               else "")
        return str(creator)
    return ""


def _fill(text: str, template: Mapping[str, Any], item: Mapping[str, Any], fallback: Mapping[str, str],
          limit: int) -> str:
    """Fill the placeholders; a value's words already in the text (fixed words or earlier values) are dropped."""
    text = str(text or "")
    seen = {word_key(w) for w in _PLACEHOLDER.sub(" ", text).split()}

    def sub(match: re.Match[str]) -> str:
        name = re.split(r"[!:\s]", match.group(1).strip(), maxsplit=1)[0]
        value = _value(name, template, item) if name in PLACEHOLDERS else ""
        words = clean(value).split()
        if not value:  # fixed fallback wording is kept as written
            words = clean(fallback.get(name, "") if name in PLACEHOLDERS else "").split()
        kept = [w for w in words if not value or word_key(w) not in seen or not word_key(w)]
        seen.update(word_key(w) for w in kept)
        return " ".join(kept)

    filled = clean(_PLACEHOLDER.sub(sub, text).replace("{", "").replace("}", ""))
    return fit(re.sub(r"\s+([,.!?])", r"\1", filled).strip(" -:,"), limit)


def render(template: Mapping[str, Any], item: Mapping[str, Any], phrases: Phrases | None = None) -> tuple[str, str]:
    """``(title, body)`` for one item, within the length limits; never an unfilled placeholder or a brace.

    ``phrases`` (the message language's) supplies the words used when a value or the text is missing.
    """
    fallback = {**FALLBACK, "caption": phrases.generic_body} if phrases else FALLBACK
    title = _fill(template.get("title"), template, item, fallback, TITLE_MAX) or (
        phrases.generic_title if phrases else DEFAULT_TITLE)
    body = _fill(template.get("body"), template, item, fallback, BODY_MAX) or _fill(
        "{caption}", template, item, fallback, BODY_MAX)
    return title, body


# ----- linter (ops templates and the phrase table) -----

def lint(text: str, part: str, allowed: set[str] = PLACEHOLDERS) -> list[str]:
    """Problems of one template text: placeholders, invisible characters, repeated words, length."""
    problems = []
    names = {m.strip() for m in _PLACEHOLDER.findall(text)}
    unknown = names - allowed
    if unknown or text.count("{") != text.count("}"):
        problems.append(f"unknown or malformed placeholder(s) {sorted(unknown) or text!r}; allowed: {sorted(allowed)}")
    if clean(text) != text:
        problems.append("control, bidi or repeated whitespace characters (write plain text)")
    static = _PLACEHOLDER.sub("", text)
    if repeated_words(static):
        problems.append(f"repeated word(s) {repeated_words(static)}")
    room = LIMITS[part] - PLACEHOLDER_ROOM * len(_PLACEHOLDER.findall(text))
    if len(static) > room:
        problems.append(f"{len(static)} characters of fixed text leave no room within the {LIMITS[part]}-character "
                        f"{part} limit")
    return problems


def load_phrases(path: str | Path) -> dict[str, Phrases]:
    """Read and lint the phrase table: every contract language, titles with exactly one ``{keyword}``."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    if not isinstance(data, Mapping):
        raise TemplateError(f"{path}: expected a mapping of language -> phrases")
    unknown = sorted(set(map(str, data)) - LANGUAGES)
    missing = sorted(LANGUAGES - set(map(str, data)))
    if unknown or missing:
        raise TemplateError(f"{path}: languages must be exactly the contract's; unknown {unknown}, missing {missing}")
    out = {}
    for language, entry in sorted(data.items()):
        where = f"{path}: {language}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("titles"), list) or not entry["titles"]:
            raise TemplateError(f"{where}: needs 'titles' (a non-empty list), 'generic_title' and 'generic_body'")
        texts = [("title", t, {"keyword"}) for t in entry["titles"]] + [
            ("title", entry.get("generic_title"), set()), ("body", entry.get("generic_body"), set())]
        for part, text, allowed in texts:
            text = str(text or "")
            problems = lint(text, part, allowed) if text.strip() else ["empty text"]
            if allowed and text.count("{keyword}") != 1:
                problems.append("a title needs exactly one {keyword}")
            if problems:
                raise TemplateError(f"{where} {part} {text!r}: {'; '.join(problems)}")
        out[str(language)] = Phrases(tuple(map(str, entry["titles"])), str(entry["generic_title"]),
                                     str(entry["generic_body"]))
    return out


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
        problems = lint(str(entry[part]).strip(), part)
        if problems:
            raise TemplateError(f"{where}: {part} {str(entry[part]).strip()!r}: {'; '.join(problems)}")
    return {"cluster_id": cluster, "language": language, "template_id": f"ops-{cluster}-{language}-{n}",
            "title": str(entry["title"]).strip(), "body": str(entry["body"]).strip(), "source": "ops", "keywords": []}
