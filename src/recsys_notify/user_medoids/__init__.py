"""User medoids: each user's long-term interests as up to ``max_medoids`` items.

``medoids`` (clustering and weighted sampling, no storage), ``step`` (sharded ``run_part`` /
``finish`` / ``run``), ``evaluation`` (synthetic-truth topic coverage).
"""
