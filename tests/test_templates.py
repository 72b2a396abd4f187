"""Templates: c-TF-IDF keywords, ops YAML precedence and validation, rendering never leaves placeholders."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core import templates as tpl
from recsys_notify.core.config import resolve_path
from recsys_notify.core.datasets import LANGUAGES
from recsys_notify.core.text import clean, drop_repeated_words, fit
from recsys_notify.global_medoids import templates as auto_templates
from recsys_notify.notifications.delivery import pick_templates

PLACEHOLDER = re.compile(r"[{}]")
PHRASES = tpl.load_phrases(resolve_path("configs/phrases.yaml"))


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
    built = auto_templates.build_templates(np.array([0, 0, 1, 1]), ["cats a", "cats b", "space x", "gatos y"],
                                           ["en", "en", "en", "es"], ops, PHRASES)
    assert set(zip(built.loc[built.cluster_id == 0, "source"], built.loc[built.cluster_id == 0, "language"])) == {
        ("ops", "*")} | {("auto", lang) for lang in LANGUAGES}
    c1 = built[built.cluster_id == 1]
    assert set(c1.loc[c1.source == "ops", "language"]) == {"es"} and set(c1.loc[c1.source == "auto", "language"]) == (
        LANGUAGES - {"es"})
    assert 77 not in set(built["cluster_id"])
    # keywords come from same-language captions only; a language without captions gets its generic title
    en0 = built[(built.cluster_id == 0) & (built.language == "en")]
    assert en0["title"].tolist() == [t.replace("{keyword}", "cats") for t in PHRASES["en"].titles]
    hi0 = built[(built.cluster_id == 0) & (built.language == "hi")]
    assert hi0["title"].tolist() == [PHRASES["hi"].generic_title]
    assert hi0["template_id"].tolist() == ["auto-0-hi-generic"]
    # what notifications pick per (user, cluster, language): ops wins, the message language before "*",
    # then the language's generic phrase, then the English default
    pos, rows, level = pick_templates(built, np.array([1, 2, 3, 4, 5]), np.array([1, 1, 0, 99, 99]),
                                      np.array(["es", "en", "de", "hi", "xx"]), seed=0, phrases=PHRASES)
    picked = [rows[p] for p in pos]
    assert [t["source"] for t in picked] == ["ops", "auto", "auto", "generic", "default"]
    assert level.tolist() == ["language", "language", "language", "generic", "default"]
    assert picked[3]["title"] == PHRASES["hi"].generic_title
    ops_star = built[(built.cluster_id == 0) & (built.language == "*")].to_dict("records")[0]
    assert tpl.render(ops_star, {"caption": "my cat video"}) == ("Ops pick: cats", "my cat video")


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


@pytest.mark.parametrize("entry,message", [
    ('{title: "Hi \\u202eyou", body: "x"}', "control, bidi"),
    ('{title: "New new {keyword}", body: "x"}', "repeated word"),
    ('{title: "' + "x" * 45 + ' {keyword}", body: "x"}', "50-character title limit"),
    ('{title: "Hi", body: "' + "y" * 121 + '"}', "120-character body limit"),
])
def test_ops_template_linter(tmp_path, entry, message):
    with pytest.raises(tpl.TemplateError, match=message):
        tpl.load_ops_templates(_write(tmp_path, f'clusters:\n  0:\n    en:\n      - {entry}\n'))


def test_phrase_table_covers_every_contract_language_and_is_checked(tmp_path):
    assert set(PHRASES) == LANGUAGES
    assert all(len(p.titles) >= 3 and all(t.count("{keyword}") == 1 for t in p.titles) for p in PHRASES.values())
    broken = resolve_path("configs/phrases.yaml").read_text().replace("Neu für dich: {keyword}", "Neu für dich")
    with pytest.raises(tpl.TemplateError, match="de title 'Neu für dich': a title needs exactly one"):
        tpl.load_phrases(_write(tmp_path, broken))
    with pytest.raises(tpl.TemplateError, match="missing \\['ar'\\]"):
        tpl.load_phrases(_write(tmp_path, re.sub(r"(?ms)^ar:.*?(?=^ja:)", "", broken)))


def test_caption_text_is_cleaned_deduplicated_and_cut_at_a_word_boundary():
    nasty = ("Watch\x00 this\x1b[31m trick\u202e \r\nnow 🎉 👩\u200d💻 trick #Trick\t"
             + "".join(f" word{i}" for i in range(30)))
    body = tpl.caption_text(nasty)
    assert len(body) <= 120 and body.endswith("…")
    assert body.startswith("Watch this [31m trick now 🎉 👩\u200d💻 word0 word1")  # ESC, NUL, bidi, CR/LF gone
    assert body.count("trick") == 1 and "#Trick" not in body and not any(c in body for c in "\x00\x1b\u202e\r\n\t")
    assert fit("short", 10) == "short" and fit("one two three four", 12) == "one two…"
    assert fit("x" * 80, 50) == "x" * 49 + "…"  # no boundary (CJK, Thai): cut inside
    assert drop_repeated_words("Cats, cats and #cats!") == "Cats, and"
    assert clean("مرحبا\u200f بك") == "مرحبا بك"  # Arabic letters kept, the RLM mark removed
    title, body = tpl.render({"title": "{caption}", "body": "{caption}"}, {"caption": None}, PHRASES["ja"])
    assert body == PHRASES["ja"].generic_body and len(title) <= 50
    # a value never repeats a word the text already has; the fixed wording is kept as written
    assert tpl.render({"title": "New for you: {keyword}", "body": "{caption}", "keywords": ["new"]},
                      {"caption": "new cats and more cats"}) == ("New for you", "new cats and more")


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
    auto = auto_templates.auto_templates([3], "en", {3: ["cats", "dogs"]}, PHRASES["en"])
    assert len(auto) == 3 and set(auto["source"]) == {"auto"}
    for row in auto.to_dict("records"):
        title, body = tpl.render(row, {"caption": "c"})
        assert "cats" in title + body and not PLACEHOLDER.search(title + body)
    assert isinstance(auto, pd.DataFrame)
