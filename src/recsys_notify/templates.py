"""Render a notification template with an item's fields.

Placeholders are ``{field}``; a field the item lacks (or that is empty) renders as nothing, so the
text never shows a raw placeholder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(r"\{(\w+)\}")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def render(template: Mapping[str, Any], item: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(title, body)`` with every ``{field}`` replaced by the item's value (or removed)."""

    def fill(text: Any) -> str:
        out = _FIELD.sub(lambda m: _text(item.get(m.group(1))), _text(text))
        return re.sub(r"\s{2,}", " ", out).strip()

    return fill(template.get("title")), fill(template.get("body"))
