"""Templates: c-TF-IDF keywords, ops YAML precedence and validation, rendering never leaves placeholders."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core import templates as tpl
from recsys_notify.core.config import resolve_path
from recsys_notify.global_medoids import templates as auto_templates
from recsys_notify.notifications.delivery import pick_templates

PLACEHOLDER = re.compile(r"[{}]")


def _write(tmp_path, text: str):
    path = tmp_path / "templates.yaml"
    path.write_text(text)
    return path


def test_ctfidf_finds_cluster_specific_words():
    captions = ["cats kittens wow", "cute cats wow", "cats meow wow", "rockets space wow", "space launch wow",
                "rockets orbit wow"]
    words = auto_templates.ctfidf_keywords(np.array([0, 0, 0, 1, 1, 1]), captions, top=2)
    assert words[0][0] == "cats" and set(words[1]) == {"rockets", "space"}
    assert all("wow" not in w for w in words.values())  # common to every cluster


def test_ops_templates_win_for_their_cluster_and_language(tmp_path):
    path = _write(tmp_path, """
clusters:
  0:
    "*":
      - {title: "Ops pick: {keyword}", body: "{caption}"}
  1:
    es:
      - {title: "Para ti", body: "{caption}"}
  77:
    "*":
      - {title: "Unknown cluster", body: "{caption}"}
""")
    ops = tpl.load_ops_templates(path)
    built = auto_templates.build_templates(np.array([0, 0, 1, 1]), ["cats a", "cats b", "space x", "space y"], ops)
    assert set(built.loc[built.cluster_id == 0, "source"]) == {"ops"}
    assert set(zip(built.loc[built.cluster_id == 1, "source"], built.loc[built.cluster_id == 1, "language"])) == {
        ("ops", "es"), ("auto", "*")}
    assert 77 not in set(built["cluster_id"])
    # what notifications pick per (user, cluster, language): ops wins, the exact language before "*"
    pos, rows = pick_templates(built, np.array([1, 2, 3]), np.array([1, 1, 0]), np.array(["es", "en", "en"]), seed=0)
    picked = [rows[p] for p in pos]
    assert [t["source"] for t in picked] == ["ops", "auto", "ops"]
    assert picked[2]["template_id"] == "ops-0-*-0"
    title, body = tpl.render(picked[2], {"caption": "my cat video"})
    assert title == "Ops pick: cats" and body == "my cat video"


@pytest.mark.parametrize("text,message", [
    ('clusters:\n  0:\n    "*":\n      - {title: "Hi {captoin}", body: "x"}\n', "unknown or malformed"),
    ('clusters:\n  0:\n    "*":\n      - {title: "Hi {caption", body: "x"}\n', "unknown or malformed"),
    ('clusters:\n  0:\n    xx:\n      - {title: "Hi", body: "x"}\n', "unknown language"),
    ('clusters:\n  abc:\n    "*":\n      - {title: "Hi", body: "x"}\n', "must be an integer"),
    ('clusters:\n  0:\n    "*":\n      - {title: "", body: "x"}\n', "non-empty"),
])
def test_invalid_ops_yaml_is_rejected_with_location(tmp_path, text, message):
    with pytest.raises(tpl.TemplateError, match=message):
        tpl.load_ops_templates(_write(tmp_path, text))


def test_repo_templates_file_is_valid():
    ops = tpl.load_ops_templates(resolve_path("configs/templates.yaml"))
    assert len(ops) and set(ops["source"]) == {"ops"}


@pytest.mark.parametrize("template", [
    {"title": "{keyword} for you", "body": "{caption}", "keywords": []},
    {"title": "{}", "body": "{caption:>10} by {creator!r}", "keywords": ["cats"]},
    {"title": "Hi {unknown} {{caption}}", "body": "{ caption } {keywords}", "keywords": None},
    {"title": None, "body": None},
    {"title": "{caption", "body": "caption}"},
])
@pytest.mark.parametrize("item", [{}, {"caption": None}, {"caption": "x" * 500, "creator_id": 4},
                                  {"caption": "{keyword} trick"}])
def test_render_never_leaves_placeholders(template, item):
    title, body = tpl.render(template, item)
    assert title and body
    assert not PLACEHOLDER.search(title) and not PLACEHOLDER.search(body)
    assert len(body) <= 200


def test_render_fills_values():
    template = {"title": "More {keyword}", "body": "{caption} from {creator}", "keywords": ["cats", "dogs"]}
    assert tpl.render(template, {"caption": "Funny cat", "creator_id": 12}) == \
        ("More cats", "Funny cat from creator 12")
    assert tpl.render(template, {})[1] == "a video picked for you from a creator you watch"


def test_auto_templates_have_variants_without_raw_keywords():
    auto = auto_templates.auto_templates({3: ["cats", "dogs"]})
    assert len(auto) == 3 and set(auto["source"]) == {"auto"}
    for row in auto.to_dict("records"):
        title, body = tpl.render(row, {"caption": "c"})
        assert "cats" in title + body and not PLACEHOLDER.search(title + body)
    assert isinstance(auto, pd.DataFrame)
