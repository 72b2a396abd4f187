"""Pair mining: item pairs that clients treat alike, the training data of the generic embedding model.

``mining`` (SQL phases and similarity, no storage), ``step`` (the ``run`` the DAG and CLI call),
``evaluation`` (synthetic-truth checks).
"""
