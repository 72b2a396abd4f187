"""One day's notifications from the dense arrays (pure): who is eligible, what each gets, the rows to write.

``outbox`` holds the messages (holdout rows flagged), ``delivery_log`` one row per user and date,
``delivery_feedback`` whether the previous day's notified items were watched on the run date.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.core.config import Settings
from recsys_notify.core.templates import Phrases
from recsys_notify.notifications.arrays import Arrays, formatted
from recsys_notify.notifications.candidates import SOURCES, CandidateIndex
from recsys_notify.notifications.delivery import (
    OUTBOX_COLUMNS,
    TEXT_LEVELS,
    delivery_log,
    feedback,
    pick_templates,
    render_messages,
)
from recsys_notify.notifications.eligibility import holdout
from recsys_notify.notifications.evaluation import resolve_clusters
from recsys_notify.notifications.frames import FRAME_SOURCES, interests
from recsys_notify.notifications.frames import choose as choose_frames
from recsys_notify.notifications.select import Choice, choose, in_sorted


@dataclass
class Day:
    """The three outputs of a run, its counts, and the candidate index (evaluation reuses it)."""

    outbox: pd.DataFrame
    delivery_log: pd.DataFrame
    feedback: pd.DataFrame
    stats: dict[str, Any]
    index: CandidateIndex


@dataclass
class Decision:
    """Who is targeted and what each gets, before rendering (the step reads the chosen items' keyframes then)."""

    choice: Choice
    index: CandidateIndex
    target: np.ndarray
    capped: np.ndarray
    has_medoids: np.ndarray


def notify(inputs: Arrays, settings: Settings, ranker: Any, version: str,
           phrases: Mapping[str, Phrases] | None = None) -> Day:
    """Choose and render one message per eligible user; ``ranker`` None ranks with the transparent score.

    ``phrases`` (the per-language phrase table) gives the generic text of a language with no template.
    """
    return render(inputs, decide(inputs, settings, ranker), settings, version, ranker is not None, phrases)


def decide(inputs: Arrays, settings: Settings, ranker: Any) -> Decision:
    """The eligible users and each one's chosen candidate."""
    cfg = settings.notifications
    n = len(inputs.user_ids)
    medoid_seeds = inputs.seeds.loc[inputs.seeds["kind"] == "medoid", "user_pos"].to_numpy()
    has_medoids = np.bincount(medoid_seeds, minlength=n) > 0
    capped = inputs.sent_counts >= cfg.frequency_cap
    target = ~capped & (has_medoids | (cfg.no_medoid_policy == "popular"))
    choice, ci = choose(inputs, cfg, target, ranker)
    choice.cluster = resolve_clusters(inputs, ci, choice.item, choice.cluster)
    return Decision(choice, ci, target, capped, has_medoids)


def render(inputs: Arrays, decision: Decision, settings: Settings, version: str, ranked: bool,
           phrases: Mapping[str, Phrases] | None = None) -> Day:
    """The outbox, delivery log and feedback rows of a decision, and the run's counts."""
    cfg = settings.notifications
    choice, target, capped, has_medoids = decision.choice, decision.target, decision.capped, decision.has_medoids
    outbox, text = build_outbox(inputs, choice, holdout(inputs.user_ids, cfg.holdout_percent, cfg.seed),
                                version, ranked, settings, phrases)
    sent = inputs.yesterday_sent
    sent_keys = inputs.keys(np.searchsorted(inputs.user_ids, sent["user_id"].to_numpy(np.int64)),
                            np.searchsorted(inputs.catalogue.item_ids, sent["item_id"].to_numpy(np.int64)))
    opened, played = in_sorted(sent_keys, inputs.today_watched), in_sorted(sent_keys, inputs.today_played)
    stats = {
        "model_version": version, **inputs.counts,
        "eligible_users": int(target.sum()), "capped_users": int(capped.sum()),
        "users_without_medoids": int((~has_medoids).sum()),
        "no_candidate_users": int(target.sum() - len(choice.user)),
        "notifications": int((~outbox["holdout"]).sum()), "holdout": int(outbox["holdout"].sum()),
        "sources": {SOURCES[k]: v for k, v in sorted(Counter(choice.source.tolist()).items())},
        "median_candidates": float(np.median(choice.candidates)) if len(choice.candidates) else 0.0,
        "candidates_hist": np.bincount(choice.candidates.astype(np.int64)).tolist(),
        **text,
        "feedback_delivered": len(sent), "feedback_opened": int(opened.sum()), "feedback_played": int(played.sum()),
        "feedback_opened_not_played": int((opened & ~played).sum()),
    }
    return Day(outbox, delivery_log(outbox), feedback(sent, opened, played, inputs.dt - timedelta(days=1)), stats,
               decision.index)


SHARED_COUNTS = ("items", "blocked_items")  # the same catalogue in every shard: not summed


def combine_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats of one run from its shards' :func:`notify` stats: counts summed, the median recomputed."""
    out: dict[str, Any] = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            if key == "sources":
                out[key] = {k: out[key].get(k, 0) + value.get(k, 0) for k in {*out[key], *value}}
            elif key == "candidates_hist":
                a, b = out[key], value
                out[key] = [x + y for x, y in zip(a + [0] * (len(b) - len(a)), b + [0] * (len(a) - len(b)))]
            elif isinstance(value, int) and not isinstance(value, bool) and key not in SHARED_COUNTS:
                out[key] = out.get(key, 0) + value
            elif key not in out:
                out[key] = value
    hist = np.asarray(out["candidates_hist"], dtype=np.int64)
    out["median_candidates"] = median_of_hist(hist)
    out["sources"] = dict(sorted(out["sources"].items()))
    return out


def median_of_hist(hist: np.ndarray) -> float:
    """The median of the values a histogram (counts of 0, 1, 2, ...) describes, as ``np.median`` gives it."""
    n = int(hist.sum())
    if n == 0:
        return 0.0
    cum = np.cumsum(hist)
    lo, hi = np.searchsorted(cum, (n - 1) // 2, "right"), np.searchsorted(cum, n // 2, "right")
    return (lo + hi) / 2.0


def message_languages(inputs: Arrays, choice: Choice) -> tuple[np.ndarray, np.ndarray]:
    """Each message's language: the user's, else (a user without one) the chosen item's; and where it came from."""
    item_lang = np.array(inputs.catalogue.languages, dtype=object)[inputs.catalogue.lang[choice.item]]
    given = inputs.user_language[choice.user] if inputs.user_language is not None else np.full(len(choice.user), None)
    from_item = pd.isna(given)
    return np.where(from_item, item_lang, given).astype(object), from_item


def build_outbox(inputs: Arrays, choice: Choice, held_out: np.ndarray, version: str, champion: bool,
                 settings: Settings, phrases: Mapping[str, Phrases] | None = None
                 ) -> tuple[pd.DataFrame, dict[str, int]]:
    """The outbox rows and the counts of the text choices (language source and template fallback level)."""
    cfg, cat = settings.notifications, inputs.catalogue
    item_ids = cat.item_ids[choice.item]
    cluster_ids = np.where(choice.cluster >= 0, inputs.cluster_ids[np.maximum(choice.cluster, 0)], -1)
    user_ids = inputs.user_ids[choice.user]
    lang, from_item = message_languages(inputs, choice)
    frame = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "cluster_id": cluster_ids})
    template_pos, templates, level = pick_templates(inputs.templates, user_ids, cluster_ids, lang, cfg.seed, phrases)
    frame = pd.concat([frame, render_messages(template_pos, templates, item_ids, cluster_ids, cat.frame, lang,
                                              phrases)], axis=1)
    frame["date"] = inputs.dt
    frame["language"] = lang
    frame["thumbnail"] = formatted(lambda i: cfg.thumbnail_uri.format(item_id=i), item_ids)
    interest, kind = interests(choice.seed, choice.cluster, inputs.cluster_reps)
    image = choose_frames(inputs.keyframes, choice.item, interest, kind,
                          inputs.content if inputs.content is not None else cat.vectors)
    frame["frame_ts"] = image.ts
    frame["image_uri"] = np.where(pd.isna(image.uri), frame["thumbnail"].to_numpy(object), image.uri)
    interest_ids = cat.item_ids[np.maximum(interest, 0)]
    frame["score"] = choice.score.astype(np.float64)
    frame["source"] = np.array(SOURCES)[choice.source]
    frame["model_version"] = version
    def text(pos: int, lv: str, lg: str, fi: bool) -> str:
        tl = str(templates[pos].get("language", lg))
        return (f"; text {templates[pos]['template_id']} ({lv}, language {lg}{' from the item' if fi else ''}"
                f"{'' if tl in (lg, '*') else f', template language {tl}'}); ")

    images = formatted(lambda s, ts, iid, c: "image cover" if s == 2 else
                       f"image frame {ts:.2f}s (closest to the {FRAME_SOURCES[s]} item {iid}, cosine {c:.2f})",
                       image.source, image.ts, interest_ids, image.cosine)
    creator = cat.frame["creator_id"].to_numpy(np.int64)[choice.item]
    user_creator = inputs.user_creator[choice.user] if inputs.user_creator is not None else np.full(len(creator), -1)
    by_creator = cfg.creator_affinity & (user_creator >= 0) & (creator == user_creator)
    gain = f"; dominant creator x{1 + cfg.creator_boost:g}"
    frame["reason"] = (reasons(inputs, choice, cluster_ids, champion, version) + np.where(by_creator, gain, "")
                       + formatted(text, template_pos, level, lang, from_item) + images)
    frame["holdout"] = held_out[choice.user]
    counts = {f"text_{name}": int((level == name).sum()) for name in TEXT_LEVELS}
    counts["language_from_item"] = int(from_item.sum())
    counts |= {f"frame_{name}": int((image.source == i).sum()) for i, name in enumerate(FRAME_SOURCES)}
    counts["creator_boosted"] = int(np.sum(by_creator))
    counts |= {f"language_{code}": int(n) for code, n in sorted(Counter(lang.tolist()).items())}
    return frame[OUTBOX_COLUMNS], counts  # choices come in user-position order, i.e. ascending user_id


def reasons(inputs: Arrays, choice: Choice, cluster_ids: np.ndarray, champion: bool, version: str) -> np.ndarray:
    """Human-readable why: source, seed item and similarity, popularity and age (and the model when used)."""
    cat = inputs.catalogue
    seeds = np.where(choice.seed >= 0, cat.item_ids[np.maximum(choice.seed, 0)], -1)
    head = f"{version} score; " if champion else ""
    return (formatted(lambda s, c: f"{head}{SOURCES[s]}: cluster {c}", choice.source, cluster_ids)
            + formatted(lambda sim, seed: f", similarity {sim:.2f} to item {seed}" if seed >= 0 else "",
                        choice.sim, seeds)
            + formatted(lambda p, a: f", {p:.0f} recent positive views, {a:.1f} days old",
                        cat.pop[choice.item], cat.age_days[choice.item]))
