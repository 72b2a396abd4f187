"""Settings: defaults, YAML file, RECSYS__ env overrides, and loud failures on bad values."""

from __future__ import annotations

import pytest

from recsys_notify.core.config import ConfigError, get_settings, load_settings
from recsys_notify.core.storage import storage_from_settings


def test_defaults_match_the_issue():
    s = load_settings(environ={})
    assert s.data_root == "file://./data"
    assert s.embedding.trimmed_dim == 16
    assert s.global_medoids.k == 500
    assert s.user_medoids.max_medoids == 12
    assert s.user_medoids.window_days == 14
    assert s.tracking_uri == f"sqlite:///{s.local_root() / 'mlflow.db'}"
    assert s.artifact_root == (s.local_root() / "mlartifacts").as_uri()


def test_yaml_then_env_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_root: /srv/data\nglobal_medoids:\n  k: 300\n  schedule: '0 3 * * 1'\n"
                   "interaction_weights:\n  like: 1.7\n")
    s = load_settings(cfg, environ={"RECSYS__GLOBAL_MEDOIDS__K": "200", "RECSYS__USER_MEDOIDS__ALGORITHM": "hdbscan"})
    assert s.data_root == "/srv/data"
    assert s.global_medoids.k == 200  # env wins over the file
    assert s.global_medoids.schedule == "0 3 * * 1"
    assert s.interaction_weights.like == 1.7
    assert s.user_medoids.algorithm == "hdbscan"


def test_config_path_from_env_and_cached_settings(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("notifications:\n  holdout_percent: 10\n")
    monkeypatch.setenv("RECSYS_CONFIG", str(cfg))
    get_settings.cache_clear()
    try:
        assert get_settings().notifications.holdout_percent == 10
    finally:
        get_settings.cache_clear()


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("global_medoids:\n  kk: 3\n")
    with pytest.raises(ConfigError,
                       match=r"invalid config .*c\.yaml: global_medoids\.kk: Extra inputs are not permitted"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match=r"pair_mining\.windw_days: Extra inputs are not permitted"):
        load_settings(environ={"RECSYS__PAIR_MINING__WINDW_DAYS": "3"})


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError, match=r"global_medoids\.k: Input should be greater than or equal to 2"):
        load_settings(environ={"RECSYS__GLOBAL_MEDOIDS__K": "1"})
    with pytest.raises(ConfigError, match=r"notifications\.holdout_percent: Input should be less than or equal to 100"):
        load_settings(environ={"RECSYS__NOTIFICATIONS__HOLDOUT_PERCENT": "150"})
    with pytest.raises(ConfigError, match=r"user_medoids\.max_medoids: Input should be a valid integer"):
        load_settings(environ={"RECSYS__USER_MEDOIDS__MAX_MEDOIDS": "many"})


def test_file_must_be_a_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must contain a mapping, got list"):
        load_settings(cfg, environ={})


@pytest.mark.parametrize("schedule", ["@daily", "@weekly", "@quarterly", "0 4 * * 0", "*/30 * * * *"])
def test_time_based_schedules_accepted(schedule):
    assert load_settings(environ={"RECSYS__GLOBAL_MEDOIDS__SCHEDULE": schedule}).global_medoids.schedule == schedule


@pytest.mark.parametrize("schedule", ["@once", "@continuous", "None"])
def test_non_time_based_schedule_rejected(schedule):
    with pytest.raises(ConfigError, match="global_medoids.schedule must be time-based"):
        load_settings(environ={"RECSYS__GLOBAL_MEDOIDS__SCHEDULE": schedule})


@pytest.mark.parametrize("schedule", ["@weekli", "61 * * * *", "every monday"])
def test_malformed_schedule_rejected(schedule):
    with pytest.raises(ConfigError, match="is not a cron expression or one of"):
        load_settings(environ={"RECSYS__GLOBAL_MEDOIDS__SCHEDULE": schedule})


def test_data_root_scheme_and_s3_tracking():
    with pytest.raises(ConfigError, match="data_root scheme not supported: 'hdfs://x'"):
        load_settings(environ={"RECSYS__DATA_ROOT": "hdfs://x"})
    s3 = load_settings(environ={"RECSYS__DATA_ROOT": "s3://bucket/prefix"})
    assert s3.artifact_root == "s3://bucket/prefix/mlartifacts"
    with pytest.raises(ValueError, match="mlflow_tracking_uri must be set when data_root is on S3"):
        _ = s3.tracking_uri


def test_storage_options_from_env_reach_storage(tmp_path):
    s = load_settings(environ={
        "RECSYS__DATA_ROOT": str(tmp_path / "d"),
        "RECSYS__STORAGE_OPTIONS__AUTO_MKDIR": "true",
    })
    assert s.storage_options == {"auto_mkdir": True}
    storage = storage_from_settings(s)
    assert storage.local and storage.root == str(tmp_path / "d")
