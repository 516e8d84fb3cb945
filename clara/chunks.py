"""Chunked storage of large inputs (seed 000's memory chunks): a long attachment is kept as
linked parts — each a fact in the conversation's scope with slug `chunk:<message id>:<file>:<n>`
and context "<file>, part n of N" — plus one summary fact (`…:summary`) naming the parts, so a
question about any passage recalls the part that holds it and the summary says where it came from."""

from __future__ import annotations

import asyncio
import re

CHUNK_CHARS = 1500  # a part: a few paragraphs, well inside what recall and the prompt budgets handle
CHUNK_MIN = 2000  # attachments shorter than this stay whole in the message itself
MAX_CHUNKS = 200


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """`text` in parts of at most `size` characters, cut at paragraph, then line, then sentence,
    then word boundaries (a hard cut only for one overlong word). Nothing is dropped."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= size:
            pieces.append(para)
            continue
        for unit in re.split(r"(?<=[.!?])\s+|\n", para):
            while len(unit) > size:
                cut = unit.rfind(" ", 0, size)
                cut = cut if cut > size // 2 else size
                pieces.append(unit[:cut].strip())
                unit = unit[cut:].strip()
            if unit.strip():
                pieces.append(unit.strip())
    chunks: list[str] = []
    for p in pieces:
        if chunks and len(chunks[-1]) + 2 + len(p) <= size:
            chunks[-1] += "\n\n" + p
        else:
            chunks.append(p)
    return chunks


async def store_chunks(store, *, filename: str, text: str, scope: str, message_id: int, speaker: str, user_id: str):
    """Store a long attachment as linked parts and a summary (one transaction). Returns
    (summary fact id, number of parts) or None when the text is short or empty."""
    from clara.extract import extractive_summary

    if len(text) < CHUNK_MIN:
        return None
    parts = split_chunks(text)[:MAX_CHUNKS]
    if not parts:
        return None
    name = re.sub(r"[^\w.\-]+", "_", filename)[:60] or "attachment"
    base = f"chunk:{message_id}:{name}"
    n = len(parts)
    summary = await asyncio.to_thread(extractive_summary, [(speaker, p) for p in parts[:40]], 5)
    summary = " ".join(line.split(": ", 1)[-1] for line in summary.splitlines())[:1500]
    common = dict(kind="note", speaker=speaker, created_by=user_id, source_message_ids=[message_id], importance=0.5)
    items = [
        {
            **common,
            "content": part,
            "context": f"{filename[:200]}, part {i} of {n} (summary: {base}:summary)",
            "slug": f"{base}:{i}",
        }
        for i, part in enumerate(parts, 1)
    ]
    items.append(
        {
            **common,
            "kind": "summary",
            "content": f"Attachment {filename[:200]} ({len(text):,} characters, {n} parts): "
            + (summary or parts[0][:300]),
            "context": f"parts {base}:1 … {base}:{n}",
            "slug": f"{base}:summary",
        }
    )
    res = await store.add_many(items, scope)
    return res.ids[-1], n - sum(1 for i in res.ids[:-1] if i is None)
