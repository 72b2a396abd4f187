"""Experiment configs and the label-rule parser (no arbitrary code)."""

import numpy as np
import pytest

from recsys_notify.two_tower.config import (
    ExperimentConfig,
    LabelRuleError,
    available_experiments,
    identical_groups,
    load_experiment,
    parse_label_rule,
)

COLS = {"completion": np.array([0.95, 0.5, 0.85, 0.1]), "liked": np.array([False, True, False, False]),
        "shared": np.array([False, False, False, True]), "watch_time_s": np.array([10.0, 3.0, 40.0, 1.0])}


@pytest.mark.parametrize("rule, expected", [
    ("completion > 0.9", [1, 0, 0, 0]),
    ("completion > 0.99 or liked or shared", [0, 1, 0, 1]),
    ("liked or shared or completion > 0.8", [1, 1, 1, 1]),
    ("not liked and 0.8 <= completion < 0.96", [1, 0, 1, 0]),
    ("watch_time_s >= 10 and not shared", [1, 0, 1, 0]),
])
def test_label_rules(rule, expected):
    assert parse_label_rule(rule)(COLS).astype(int).tolist() == expected


@pytest.mark.parametrize("rule, fragment", [
    ("__import__('os').system('true')", "function calls"),
    ("completion.real > 0", "attribute access"),
    ("liked[0]", "subscripts"),
    ("completion * 2 > 1", "arithmetic"),
    ("user_id > 3", "unknown name 'user_id'"),
    ("'a' < 'b'", "not allowed"),
    ("completion >", "not a valid expression"),
    ("lambda: 1", "lambdas"),
])
def test_unsafe_or_invalid_rules_are_rejected(rule, fragment):
    with pytest.raises(LabelRuleError, match=fragment):
        parse_label_rule(rule)


def test_config_validates_rule_and_rejects_unknown_keys():
    with pytest.raises(ValueError, match="function calls"):
        ExperimentConfig(name="x", label_rule="open('f')")
    with pytest.raises(ValueError):
        ExperimentConfig(name="x", window=7)


def test_shipped_configs_all_load():
    names = available_experiments("configs/two_tower")
    assert len(names) == 11
    assert {"base_dedup", "simclr_history_normalized_dot",
            "simclr_history_distribution_creator_batchnorm"} <= set(names)
    sources = {load_experiment(n, "configs/two_tower").embedding_source for n in names}
    assert sources == {"content", "gem"}
    with pytest.raises(ValueError, match="unknown two-tower experiment"):
        load_experiment("nope", "configs/two_tower")


def test_sample_weights_and_filters():
    import pandas as pd

    from recsys_notify.core.config import InteractionWeights
    from recsys_notify.two_tower.data import filter_interactions, sample_weights

    f = pd.DataFrame({"label": [1, 1, 1, 1, 1, 0, 1], "completion": [0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1],
                      "liked": [0, 1, 0, 1, 1, 1, 0], "shared": [0, 0, 1, 0, 1, 1, 0],
                      "watch_time_s": [4.0, 100, 0, 1, 1, 1, 1]}).astype({"liked": bool, "shared": bool})
    w = sample_weights(f, ExperimentConfig(name="x", sample_weight="interaction_type"), InteractionWeights())
    assert w.tolist() == pytest.approx([1.2, 1.5, 2.0, 2.5, 3.0, 1.0, 1.0])  # negatives weigh 1
    w = sample_weights(f, ExperimentConfig(name="x", sample_weight="watch_time"), InteractionWeights())
    assert w.tolist() == pytest.approx([2.0, 8.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # sqrt(s) clipped to [1, 8]

    # user 1: 4 interactions, mixed labels -> kept; user 2: only positives -> dropped; item 9 seen once -> dropped
    rows = ([(1, i, i % 2) for i in range(4)] + [(2, i, 1) for i in range(4)] + [(3, i, 0) for i in range(4)]
            + [(1, 9, 1)])
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "label"])
    kept = filter_interactions(frame, ExperimentConfig(name="x"))
    assert sorted(kept["user_id"].unique()) == [1] and 9 not in kept["item_id"].values


def test_configs_that_cannot_differ_are_reported_as_identical():
    names = available_experiments("configs/two_tower")
    assert identical_groups([load_experiment(n, "configs/two_tower") for n in names]) == []
    on_content = [load_experiment(n, "configs/two_tower", {"embedding_source": "content"}) for n in names]
    groups = identical_groups(on_content)
    assert ["dedup_user_history", "simclr_user_history"] in groups
    assert ["dedup_history_id_features", "simclr_history_id_features"] in groups
    assert all(len(g) >= 2 for g in groups)
