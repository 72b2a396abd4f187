"""Daily personalised notifications: candidates, filters, fallbacks, ranking, templates, outbox."""

from recsys_notify.notify.step import notify

__all__ = ["notify"]
