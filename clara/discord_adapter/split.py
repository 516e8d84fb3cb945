"""Splitting a long reply into Discord-sized messages (2000 characters each).

Cuts prefer, in order: a blank line (paragraph), a line break, a sentence end, a space; a hard
cut only when a single word is longer than the limit. Code fences are never broken: when a cut
falls inside a ``` block, the chunk is closed with ``` and the next one reopens it with the same
language tag, so each message renders on its own.
"""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
_FENCE = re.compile(r"^\s*```(\S*)", re.MULTILINE)


def _open_fence(text: str) -> str | None:
    """The language tag ('' for none) of a code fence left open at the end of `text`, else None."""
    lang = None
    for m in _FENCE.finditer(text):
        lang = m.group(1) if lang is None else None
    return lang


def _cut(text: str, limit: int) -> int:
    window = text[:limit]
    for sep, keep in (("\n\n", 2), ("\n", 1)):
        i = window.rfind(sep)
        if i > limit // 3:
            return i + keep
    ends = list(re.finditer(r"[.!?…](\s)", window))
    m = ends[-1] if ends else None
    if m and m.end() > limit // 3:
        return m.end()
    i = window.rfind(" ")
    if i > limit // 3:
        return i + 1
    return limit


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """`text` as a list of chunks of at most `limit` characters (see module doc). Empty or
    whitespace-only text gives []."""
    if limit < 40:
        raise ValueError("limit too small to carry code fences")
    chunks: list[str] = []
    rest = text.strip("\n")
    reopen = ""
    while rest:
        body = reopen + rest
        if len(body) <= limit:
            chunks.append(body)
            break
        room = limit - 4  # space to close an open fence with "\n```"
        cut = _cut(body, room)
        if reopen and cut <= len(reopen):
            cut = room
        chunk = body[:cut].rstrip()
        lang = _open_fence(chunk)
        if lang is not None:
            chunk += "\n```"
            reopen = f"```{lang}\n"
        else:
            reopen = ""
        chunks.append(chunk)
        rest = body[cut:].lstrip("\n") if not reopen else body[cut:].lstrip("\n")
        if reopen and rest.lstrip().startswith("```") and _open_fence(reopen + rest[: rest.find("\n") + 1]) is None:
            # The fence closes right here: nothing to reopen.
            rest = rest.lstrip()[3:].lstrip("\n")
            reopen = ""
    return [c for c in chunks if c.strip()]
