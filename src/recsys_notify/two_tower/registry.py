"""Registry gate: a new version becomes ``champion`` only if it beats the current one on the same data.

Both the candidate and the current champion are scored through the serving path
(:class:`ChampionRanker`, features from the day before the validation day) on one fixed evaluation
set per day: the day's impressions prepared with the default experiment config (:data:`GATE_EVAL`),
whatever the candidate's own config. Scoring is deterministic, so the same model gets the same score
in every gate of that day; the set's fingerprint is tagged (``gate_eval_set``) so this can be checked.
Besides the MIND-style impression metrics the gate reports full-catalogue ones on the held-out day.
Everything the gate reads is resolved once, at its start. The candidate must improve the primary
metric, and no guard metric may drop by more than the tolerance (absolute).
Otherwise it gets the ``challenger`` alias and a ``gate_reason`` tag saying why.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np

from recsys_notify.core.config import Settings
from recsys_notify.core.inputs import resolve
from recsys_notify.core.storage import Storage
from recsys_notify.two_tower.config import ExperimentConfig
from recsys_notify.two_tower.data import interactions_from, prepare, train_requests
from recsys_notify.two_tower.metrics import evaluate_scorer
from recsys_notify.two_tower.serving import CHALLENGER, CHAMPION, BoundRanker, _client, load_champion, load_version

GATE_EVAL = ExperimentConfig(name="gate_eval", description="the gate's fixed evaluation set")
FULL_RANKING = ("full_ndcg_10", "recall_10")


def fingerprint(prep: Any) -> str:
    """Short hash of an evaluation set: its impressions, the excluded (seen) pairs and the candidates."""
    h = hashlib.sha256()
    for frame in (prep.valid[["user_id", "item_id", "label"]], prep.seen[["user_id", "item_id"]]):
        h.update(np.ascontiguousarray(frame.sort_values(list(frame.columns)).to_numpy(np.int64)).tobytes())
    h.update(np.sort(np.asarray(prep.candidates, np.int64)).tobytes())
    return h.hexdigest()[:16]


def gate_decision(candidate: Mapping[str, float], champion: Mapping[str, float] | None, primary: str,
                  guards: list[str], tolerance: float) -> tuple[bool, str]:
    """(promote?, reason) for metrics where higher is better."""
    if champion is None:
        return True, "no current champion"
    cand, champ = candidate.get(primary, math.nan), champion.get(primary, math.nan)
    if not math.isfinite(cand):
        return False, f"{primary} is not finite ({cand})"
    if math.isfinite(champ) and cand <= champ:
        return False, f"{primary} {cand:.4f} does not beat champion {champ:.4f}"
    for guard in guards:
        g_new, g_old = candidate.get(guard, math.nan), champion.get(guard, math.nan)
        if math.isfinite(g_old) and (not math.isfinite(g_new) or g_new < g_old - tolerance):
            return False, f"guard {guard} dropped {g_old:.4f} -> {g_new:.4f} (tolerance {tolerance})"
    return True, f"{primary} {cand:.4f} beats champion {champ:.4f}"


def evaluate_ranker(ranker: BoundRanker, prep: Any, model: str = "model") -> dict[str, float]:
    """Metrics of a bound ranker on prepared validation impressions."""
    return evaluate_scorer(ranker.score_matrix, prep.valid, prep.seen, np.sort(prep.candidates), model=model)


def gate(storage: Storage, dt: date, settings: Settings, version: str) -> dict[str, Any]:
    """Compare registered ``version`` (validated on day ``dt``) with the champion and set aliases/tags."""
    tt = settings.two_tower
    candidate = load_version(settings, version=version)
    if candidate is None:
        raise ValueError(f"{tt.registered_model} has no version {version}")
    champion = load_champion(settings)
    if champion is not None and champion.version == candidate.version:
        return {"version": version, "promoted": True, "reason": "already champion", "champion_version": version}
    history_end = dt - timedelta(days=1)
    requests = {**train_requests(GATE_EVAL, dt), **candidate.requests(history_end, dt)}
    if champion is not None:
        requests |= champion.requests(history_end, dt)
    inputs = resolve(storage, requests)
    prep = prepare(interactions_from(inputs, GATE_EVAL), GATE_EVAL, settings.interaction_weights)
    eval_set = fingerprint(prep)
    cand_metrics = evaluate_ranker(candidate.bind(inputs), prep, f"{tt.registered_model} v{version}")
    champ_metrics = (evaluate_ranker(champion.bind(inputs), prep, f"{tt.registered_model} v{champion.version}")
                     if champion is not None else None)
    promote, reason = gate_decision(cand_metrics, champ_metrics, tt.primary_metric, tt.guard_metrics,
                                    tt.guard_tolerance)
    client = _client(settings)
    name = tt.registered_model
    client.set_model_version_tag(name, version, "gate", CHAMPION if promote else CHALLENGER)
    client.set_model_version_tag(name, version, "gate_reason", reason)
    client.set_model_version_tag(name, version, "gate_day", dt.isoformat())
    client.set_model_version_tag(name, version, "gate_eval_set", eval_set)
    client.set_registered_model_alias(name, CHAMPION if promote else CHALLENGER, version)
    if candidate.run_id:
        client.set_tag(candidate.run_id, "gate", f"{'promoted' if promote else 'challenger'}: {reason}")
        for key, value in (champ_metrics or {}).items():
            if isinstance(value, float) and math.isfinite(value):
                client.log_metric(candidate.run_id, f"champion_{key}", value)
    shown = [tt.primary_metric, *tt.guard_metrics, *FULL_RANKING]
    return {"version": version, "promoted": promote, "reason": reason, "eval_set": eval_set,
            "champion_version": version if promote else champion.version if champion else None,
            "candidate": {k: cand_metrics.get(k) for k in shown},
            "champion": None if champ_metrics is None else {k: champ_metrics.get(k) for k in shown}}
