"""Push-notification text hygiene (pure): strip control and bidi characters, drop repeated words, fit limits.

Captions arrive from uploaders verbatim; a push must not carry NUL, ESC, CR/LF or bidi overrides
(they garble or spoof the lock screen), but emoji and every script's letters and combining marks stay.
Lengths are counted in code points, which never undercounts what a phone shows.
"""

from __future__ import annotations

import re
import unicodedata

TITLE_MAX = 50
BODY_MAX = 120
ELLIPSIS = "…"
# bidi embeddings/overrides/isolates and marks: invisible, and able to reorder what the user reads
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# kept format characters: zero-width joiner and variation selectors build emoji sequences
EMOJI_PARTS = frozenset("\u200d\ufe0e\ufe0f")
_SPACE = re.compile(r"\s+")
_WORD_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def clean(text: object) -> str:
    """``text`` without control, bidi and other invisible format characters, whitespace collapsed."""
    out = []
    for ch in str(text or ""):
        cat = unicodedata.category(ch)
        if ch in BIDI or (cat == "Cf" and ch not in EMOJI_PARTS) or cat in ("Cs", "Co", "Cn"):
            continue
        out.append(" " if cat == "Cc" or cat in ("Zl", "Zp") else ch)
    return _SPACE.sub(" ", "".join(out)).strip()


def word_key(word: str) -> str:
    """What makes two words "the same": case and surrounding punctuation or ``#`` ignored."""
    return _WORD_EDGE.sub("", word).casefold()


def drop_repeated_words(text: str) -> str:
    """Keep the first occurrence of each word (``#plants`` repeats ``plants``); punctuation-only tokens stay."""
    seen: set[str] = set()
    kept = []
    for word in text.split(" "):
        key = word_key(word)
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(word)
    return " ".join(w for w in kept if w)


def repeated_words(text: str) -> list[str]:
    """Words that occur more than once (for the template linter)."""
    keys = [word_key(w) for w in text.split()]
    return sorted({k for k in keys if k and keys.count(k) > 1})


def fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` code points at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    head = text[:limit - len(ELLIPSIS)]
    cut = head.rfind(" ")
    if cut >= limit // 3:  # a boundary not too far back; else (one long word, CJK/Thai) cut inside
        head = head[:cut]
    return head.rstrip(" ,.;:!?-–—") + ELLIPSIS
