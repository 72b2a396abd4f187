"""Daily personalised notifications: candidates, filters, fallbacks, ranking, templates, outbox.

``arrays`` (the run's inputs as dense arrays), ``candidates``, ``select``, ``ranking``, ``eligibility``,
``delivery`` (templates and rows), ``daily`` (one day, pure), ``evaluation`` (next-day hit rates),
``step`` (the ``run`` the DAG and CLI call).
"""
