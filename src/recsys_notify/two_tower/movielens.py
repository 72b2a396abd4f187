"""MovieLens-100K reader and item features for the full-ranking benchmark (benchmarks/bench_movielens.py).

Reads either the GroupLens layout (``u.data``, ``u.item``, ``u.user``) or RecBole's atomic files
(``ml-100k.inter``, ``ml-100k.item``, ``ml-100k.user``; the copy shipped in the ``recbole`` wheel).
Item embedding: genres plus hashed title tokens and release year,
reduced by PCA so the dimensions are variance-ordered like the production embeddings.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
TITLE_BUCKETS = 512


def read_movielens(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings: user_id, item_id, rating, ts; items: item_id, title, genres, year; users: user_id, ...)."""
    d = Path(directory)
    if (d / "u.data").exists():
        return _read_grouplens(d)
    inter = sorted(d.glob("*.inter"))
    if inter:
        return _read_atomic(inter[0].with_suffix(""))
    raise FileNotFoundError(f"{d} has neither u.data/u.item/u.user nor RecBole *.inter/*.item/*.user files")


def _read_grouplens(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(d / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    cols = ["item_id", "title", "release", "video_release", "url", *GENRES]
    raw = pd.read_csv(d / "u.item", sep="|", names=cols, encoding="latin-1")
    genres = raw[GENRES].to_numpy(bool)
    items = pd.DataFrame({"item_id": raw["item_id"], "title": raw["title"].fillna(""),
                          "genres": [[g for g, on in zip(GENRES, row) if on] for row in genres],
                          "year": pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce").dt.year})
    users = pd.read_csv(d / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
    return _ratings(ratings), items, users


def _read_atomic(stem: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def load(suffix: str) -> pd.DataFrame:
        frame = pd.read_csv(f"{stem}.{suffix}", sep="\t", dtype=str, keep_default_na=False)
        frame.columns = [c.split(":")[0] for c in frame.columns]
        return frame

    inter = load("inter")
    ratings = pd.DataFrame({"user_id": inter["user_id"].astype(int), "item_id": inter["item_id"].astype(int),
                            "rating": inter["rating"].astype(float), "timestamp": inter["timestamp"].astype(float)})
    raw = load("item")
    items = pd.DataFrame({"item_id": raw["item_id"].astype(int), "title": raw["movie_title"],
                          "genres": raw["class"].str.split(),
                          "year": pd.to_numeric(raw["release_year"], errors="coerce")})
    users = load("user")
    users["user_id"] = users["user_id"].astype(int)
    return _ratings(ratings), items, users


def _ratings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"user_id": frame["user_id"].astype(np.int64), "item_id": frame["item_id"].astype(np.int64),
                         "rating": frame["rating"].astype(float),
                         "ts": pd.to_datetime(frame["timestamp"].astype(np.int64), unit="s", utc=True)})


def item_embeddings(items: pd.DataFrame, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Genres (one-hot, per-item normalised) + hashed title tokens + year, PCA-reduced to ``dim``."""
    genre_index = {g: i for i, g in enumerate(GENRES)}
    g = np.zeros((len(items), len(GENRES)), np.float32)
    t = np.zeros((len(items), TITLE_BUCKETS), np.float32)
    for row, (genres, title) in enumerate(zip(items["genres"], items["title"])):
        for name in genres or []:
            if name in genre_index:
                g[row, genre_index[name]] = 1.0
        tokens = re.findall(r"[a-z0-9]+", re.sub(r"\(\d{4}\)", "", str(title)).lower())
        for tok in tokens:
            t[row, zlib.crc32(tok.encode()) % TITLE_BUCKETS] += 1.0
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-6)
    year = items["year"].fillna(items["year"].median()).to_numpy(np.float32)
    decade = np.eye(10, dtype=np.float32)[np.clip(((year - 1920) // 10).astype(int), 0, 9)]
    x = np.concatenate([2.0 * g, 0.5 * t, decade], axis=1)
    n = min(dim, *x.shape)
    z = PCA(n_components=n, random_state=seed).fit_transform(x - x.mean(0)).astype(np.float32)
    return np.pad(z, ((0, 0), (0, dim - n)))
