"""Notification content inputs: the optional keyframes contract and the generator's frame ground truth."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.core.contract import validate
from recsys_notify.core.storage import Storage
from tests.frames import upto

DAY = date(2026, 11, 14)


def test_frames_are_validated_like_items(small_world_root):
    src = Storage(str(small_world_root))
    items = upto(src, "items", DAY, columns=["item_id"])["item_id"].to_numpy()
    frames = upto(src, "frames", DAY).head(60).reset_index(drop=True)
    assert validate("frames", frames, known_items=items).invalid_rows == 0
    bad = frames.copy()
    bad.loc[0, "frame_ts"] = -1.0
    bad.loc[1, "image_uri"] = " "
    bad.loc[2, "item_id"] = 999_999_999
    bad.at[3, "embedding"] = np.zeros(5, np.float32)
    bad.at[4, "embedding"] = np.full(128, np.nan, np.float32)
    bad = pd.concat([bad, bad.iloc[[10]]], ignore_index=True)  # the same (item_id, frame_ts) twice
    result = validate("frames", bad, known_items=items)
    assert result.counts == {"frame_ts not a finite offset >= 0": 1, "image_uri missing": 1, "unknown item_id": 1,
                             "embedding length 5 != 128": 1, "embedding has NaN or inf": 1,
                             "duplicate (item_id, frame_ts)": 1}
    assert len(result.valid) == len(frames) - 5 and result.valid["frame_ts"].dtype == np.float64


def test_generator_keyframes_carry_topic_ground_truth(small_world_root):
    src = Storage(str(small_world_root))
    items = upto(src, "items", DAY, columns=["item_id", "embedding"])
    frames = upto(src, "frames", DAY).merge(upto(src, "truth_frames", DAY), on=["item_id", "frame_ts"])
    per_item = frames.groupby("item_id").size()
    assert set(per_item.index) == set(items["item_id"]) and per_item.between(3, 8).all()
    assert 0.4 < frames["on_topic"].mean() < 0.65
    cover = dict(zip(items["item_id"], items["embedding"]))
    cos = np.array([np.dot(f, cover[i]) / np.linalg.norm(f) / np.linalg.norm(cover[i])
                    for i, f in zip(frames["item_id"], frames["embedding"])])
    on = frames["on_topic"].to_numpy()
    assert cos[on].mean() > cos[~on].mean() + 0.3  # an on-topic frame looks like its item, an off-topic one not
