"""Turn choices into messages: template per cluster and language, rendering, outbox and delivery log rows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.core.datasets import DELIVERY_LOG, OUTBOX
from recsys_notify.core.templates import render
from recsys_notify.notifications.arrays import ANY_LANGUAGE
from recsys_notify.notifications.eligibility import VARIANT_SALT, user_hash

DEFAULT_TEMPLATE = {"template_id": "default", "title": "Picked for you", "body": "{caption}", "source": "default"}
OUTBOX_COLUMNS = OUTBOX.columns
LOG_COLUMNS = DELIVERY_LOG.columns


def pick_templates(templates: pd.DataFrame, user_ids: np.ndarray, cluster_ids: np.ndarray,
                   languages: np.ndarray, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Template per message: the cluster's in the user's language, else its ``*`` one, else the default.

    Ops-written templates win over auto ones; several variants of a kind are split by user hash.
    Returns each message's position in the returned list of template rows (all their columns, so
    extra fields such as keywords reach ``render``); the default template is the last entry.
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
    msgs["language"] = np.where(use_exact, msgs["language"], ANY_LANGUAGE)
    h = user_hash(user_ids, seed, VARIANT_SALT)
    variants = np.maximum(np.nan_to_num(n, nan=1), 1).astype(np.uint64)
    msgs["variant"] = np.where(np.isnan(n), -1, (h % variants).astype(np.int64))
    found = msgs.merge(t[["cluster_id", "language", "variant"]].reset_index(names="_pos"),
                       on=["cluster_id", "language", "variant"], how="left")["_pos"]
    rows = t.drop(columns=["_auto", "variant"]).to_dict("records") + [DEFAULT_TEMPLATE]
    return found.fillna(len(rows) - 1).to_numpy(np.int64), rows


def render_messages(template_pos: np.ndarray, templates: list[dict], item_ids: np.ndarray, cluster_ids: np.ndarray,
                    items: pd.DataFrame) -> pd.DataFrame:
    """template_id, title and body per message; each distinct (template, item) is rendered once."""
    msgs = pd.DataFrame({"_pos": template_pos, "item_id": item_ids, "cluster_id": cluster_ids})
    pairs = msgs.drop_duplicates(["_pos", "item_id"]).merge(items, on="item_id", how="left")
    texts = [render(templates[pos], item) for pos, item in zip(pairs["_pos"].tolist(),
                                                               pairs.drop(columns="_pos").to_dict("records"))]
    rendered = pairs[["_pos", "item_id"]].assign(title=[t for t, _ in texts], body=[b for _, b in texts])
    out = msgs.merge(rendered, on=["_pos", "item_id"], how="left")
    out["template_id"] = [str(templates[pos]["template_id"]) for pos in out["_pos"].tolist()]
    return out[["template_id", "title", "body"]]


def delivery_log(outbox: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, date): what was queued or held out."""
    log = outbox[[c for c in LOG_COLUMNS if c != "status"]].copy()
    log["status"] = np.where(log["holdout"], "holdout", "queued")
    return log[LOG_COLUMNS]


def feedback(yesterday: pd.DataFrame, engaged: np.ndarray, dt: date) -> pd.DataFrame:
    """Yesterday's sends with whether the user touched the item on ``dt``."""
    return pd.DataFrame({"user_id": yesterday["user_id"].to_numpy(np.int64),
                         "item_id": yesterday["item_id"].to_numpy(np.int64),
                         "sent_date": pd.Series([dt] * len(yesterday), dtype="object"),
                         "engaged": np.asarray(engaged, dtype=bool)})
