"""MovieLens adapter (both file layouts) on a tiny fixture written here."""

import numpy as np
import pandas as pd
import pytest

from recsys_notify.two_tower.movielens import GENRES, item_embeddings, read_movielens


def _ratings(n_users=40, n_items=30, seed=0):
    """Two taste groups: users like (5) the items of their group's genre and dislike (1) the others."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        group = u % 2
        for i in rng.choice(np.arange(2, n_items + 1), 14, replace=False):
            rating = 5 if (i % 2) == group else 1
            rows.append((u, int(i), rating, 880000000 + len(rows) * 60))
        rows.append((u, 1, 3, 880000000))  # neutral rating: dropped
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def write_grouplens(d, ratings, n_items=30):
    ratings.to_csv(d / "u.data", sep="\t", header=False, index=False)
    lines = []
    for i in range(1, n_items + 1):
        flags = ["0"] * len(GENRES)
        flags[1 if i % 2 else 5] = "1"  # odd: Action, even: Comedy
        lines.append("|".join([str(i), f"Movie {i} {'Blast' if i % 2 else 'Laugh'} (1995)", "01-Jan-1995", "",
                               "http://x", *flags]))
    (d / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (d / "u.user").write_text("".join(f"{u}|30|M|other|00000\n" for u in ratings.user_id.unique()))


def write_atomic(d, ratings, n_items=30):
    inter = ratings.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token",
                                    "rating": "rating:float", "timestamp": "timestamp:float"})
    inter.to_csv(d / "ml-100k.inter", sep="\t", index=False)
    items = pd.DataFrame({"item_id:token": range(1, n_items + 1),
                          "movie_title:token_seq": [f"Movie {i} {'Blast' if i % 2 else 'Laugh'}"
                                                    for i in range(1, n_items + 1)],
                          "release_year:token": 1995,
                          "class:token_seq": ["Action" if i % 2 else "Comedy" for i in range(1, n_items + 1)]})
    items.to_csv(d / "ml-100k.item", sep="\t", index=False)
    users = pd.DataFrame({"user_id:token": ratings.user_id.unique(), "age:token": 30})
    users.to_csv(d / "ml-100k.user", sep="\t", index=False)


@pytest.mark.parametrize("writer", [write_grouplens, write_atomic])
def test_both_layouts_read_the_same(tmp_path, writer):
    ratings = _ratings()
    writer(tmp_path, ratings)
    r, items, users = read_movielens(tmp_path)
    assert len(r) == len(ratings) and len(items) == 30 and len(users) == 40
    assert items.set_index("item_id").loc[1, "genres"] == ["Action"]
    merged = r.merge(ratings.rename(columns={"timestamp": "raw_ts"}), on=["user_id", "item_id"])
    assert (merged.rating_x == merged.rating_y).all()
    assert item_embeddings(items, 16).shape == (30, 16)


def test_unknown_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="u.data"):
        read_movielens(tmp_path)
