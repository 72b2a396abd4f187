"""Turn choices into messages: template per cluster and language, rendering, outbox and delivery log rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core.buckets import BUCKET
from recsys_notify.core.datasets import DELIVERY_LOG, OUTBOX
from recsys_notify.core.templates import Phrases, render
from recsys_notify.notifications.arrays import ANY_LANGUAGE
from recsys_notify.notifications.eligibility import VARIANT_SALT, user_hash

DEFAULT_TEMPLATE = {"template_id": "default", "title": "Picked for you", "body": "{caption}", "source": "default",
                    "language": "en"}
# which template a message got, in fallback order (see docs/notifications.md, "Language and text")
TEXT_LEVELS = ("language", "any", "generic", "default")
OUTBOX_COLUMNS = OUTBOX.columns
LOG_COLUMNS = DELIVERY_LOG.columns


def pick_templates(templates: pd.DataFrame, user_ids: np.ndarray, cluster_ids: np.ndarray,
                   languages: np.ndarray, seed: int, phrases: Mapping[str, Phrases] | None = None
                   ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Template per message, in fallback order (the returned ``level``, one of :data:`TEXT_LEVELS`):

    ``language``: the cluster's template in the message language (ops before auto); ``any``: the
    cluster's ``*`` template; ``generic``: the phrase table's generic text of the language; ``default``:
    the built-in English text. Several variants of a kind are split by user hash. Returns each
    message's position in the returned list of template rows (all their columns, so extra fields
    such as keywords reach ``render``) and its level.
    """
    t = templates.assign(cluster_id=templates["cluster_id"].astype(np.int64),
                         language=templates["language"].astype(str),
                         _auto=(templates["source"].astype(str) != "ops"))
    t = t[t["_auto"] == t.groupby(["cluster_id", "language"])["_auto"].transform("min")]
    t = t.sort_values(["cluster_id", "language", "template_id"]).reset_index(drop=True)
    t["variant"] = t.groupby(["cluster_id", "language"]).cumcount()
    sizes = t.groupby(["cluster_id", "language"]).size()

    msgs = pd.DataFrame({"cluster_id": cluster_ids,
                         "language": pd.Series(languages, dtype=object).fillna(ANY_LANGUAGE)})
    exact = sizes.reindex(pd.MultiIndex.from_frame(msgs)).to_numpy()
    star = sizes.reindex(pd.MultiIndex.from_arrays([msgs["cluster_id"], np.full(len(msgs), ANY_LANGUAGE)])).to_numpy()
    use_exact = ~np.isnan(exact)
    n = np.where(use_exact, exact, star)
    level = np.where(use_exact, "language", np.where(np.isnan(star), "default", "any")).astype(object)
    wanted = msgs["language"].to_numpy()
    msgs["language"] = np.where(use_exact, msgs["language"], ANY_LANGUAGE)
    h = user_hash(user_ids, seed, VARIANT_SALT)
    variants = np.maximum(np.nan_to_num(n, nan=1), 1).astype(np.uint64)
    msgs["variant"] = np.where(np.isnan(n), -1, (h % variants).astype(np.int64))
    found = msgs.merge(t[["cluster_id", "language", "variant"]].reset_index(names="_pos"),
                       on=["cluster_id", "language", "variant"], how="left")["_pos"]
    rows = t.drop(columns=["_auto", "variant"]).to_dict("records")
    pos = found.fillna(-1).to_numpy(np.int64)
    for lang in sorted(set(wanted[pos < 0].tolist()) & set(phrases or {})):
        rows.append({"template_id": f"generic-{lang}", "language": lang, "title": phrases[lang].generic_title,
                     "body": "{caption}", "source": "generic", "keywords": []})
        fill = (pos < 0) & (wanted == lang)
        pos[fill], level[fill] = len(rows) - 1, "generic"
    rows.append(DEFAULT_TEMPLATE)
    return np.where(pos < 0, len(rows) - 1, pos), rows, level


def render_messages(template_pos: np.ndarray, templates: list[dict], item_ids: np.ndarray, cluster_ids: np.ndarray,
                    items: pd.DataFrame, languages: np.ndarray,
                    phrases: Mapping[str, Phrases] | None = None) -> pd.DataFrame:
    """template_id, title and body per message; each distinct (template, item, language) is rendered once.

    ``languages`` is each message's language: its phrases fill what the item lacks (e.g. no caption).
    """
    phrases = phrases or {}
    msgs = pd.DataFrame({"_pos": template_pos, "item_id": item_ids, "cluster_id": cluster_ids,
                         "_lang": pd.Series(languages, dtype=object).fillna("en").astype(str)})
    pairs = msgs.drop_duplicates(["_pos", "item_id", "_lang"]).merge(items, on="item_id", how="left")
    texts = [render(templates[pos], item, phrases.get(lang)) for pos, lang, item in zip(
        pairs["_pos"].tolist(), pairs["_lang"].tolist(), pairs.drop(columns=["_pos", "_lang"]).to_dict("records"))]
    rendered = pairs[["_pos", "item_id", "_lang"]].assign(title=[t for t, _ in texts], body=[b for _, b in texts])
    out = msgs.merge(rendered, on=["_pos", "item_id", "_lang"], how="left")
    out["template_id"] = [str(templates[pos]["template_id"]) for pos in out["_pos"].tolist()]
    return out[["template_id", "title", "body"]]


def delivery_log(outbox: pd.DataFrame | pa.Table) -> pd.DataFrame | pa.Table:
    """One row per (user, date): what was queued or held out. An Arrow outbox keeps its user ``bucket`` column
    (the combined outbox's layout), and no row is copied but the status."""
    if isinstance(outbox, pa.Table):
        status = pc.if_else(outbox.column("holdout"), "holdout", "queued").cast(pa.large_string())  # as from pandas
        columns = [*LOG_COLUMNS, *[c for c in outbox.column_names if c == BUCKET]]
        return pa.table({c: status if c == "status" else outbox.column(c) for c in columns})
    log = outbox[[c for c in LOG_COLUMNS if c != "status"]].copy()
    log["status"] = np.where(log["holdout"], "holdout", "queued")
    return log[LOG_COLUMNS]


def feedback(yesterday: pd.DataFrame, opened: np.ndarray, played: np.ndarray, dt: date) -> pd.DataFrame:
    """Yesterday's sends: delivered (queued to the sender), opened and played on ``dt``; engaged = played.

    A click without play (opened, not played) is no engagement, so the sent filter keeps the item away.
    """
    played = np.asarray(played, dtype=bool)
    return pd.DataFrame({"user_id": yesterday["user_id"].to_numpy(np.int64),
                         "item_id": yesterday["item_id"].to_numpy(np.int64),
                         "sent_date": pd.Series([dt] * len(yesterday), dtype="object"),
                         "engaged": played, "delivered": np.ones(len(yesterday), dtype=bool),
                         "opened": np.asarray(opened, dtype=bool) | played, "played": played})
