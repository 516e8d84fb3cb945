"""The part of a user's erasure (`FactStore.purge_user`) that goes beyond deleting their rows:
cutting copies of their words out of text machines wrote elsewhere. Runs on a synchronous
connection inside the purge's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, String, cast, delete, select, update

from storage.models import EntityRow, FactHistoryRow, FactRow, MessageRow
from storage.redact import Quotes
from storage.text import norm_name
from storage.types import PurgeReport

_STREAM = {"yield_per": 1000}


@dataclass(slots=True)
class _Candidate:
    id: int
    session_id: int | None
    content: str
    provenance: dict | None
    facts: set[int]
    users: set[str]


def _provenance(value) -> tuple[set[int], set[str]]:
    if not isinstance(value, dict):
        return set(), set()
    facts = {int(i) for i in value.get("facts") or () if isinstance(i, int) or str(i).isdigit()}
    return facts, {str(u) for u in value.get("users") or ()}


def _without(value: dict | None, their_ids: set[int], principal: str) -> dict | None:
    """Provenance minus the erased user's fact ids and name (None when nothing is left)."""
    if not isinstance(value, dict):
        return value
    facts = [i for i in value.get("facts") or () if i not in their_ids]
    users = [u for u in value.get("users") or () if u != principal]
    out = {k: v for k, v in (("facts", facts), ("users", users)) if v}
    return out or None


def _machine_written(kind: str, created_by: str | None, source_ref: str | None) -> bool:
    """Facts whose text a machine wrote from conversations: summaries, agents' facts, facts with no
    author. Plugins' facts are derived from their owner's own data and are left alone."""
    if (source_ref or "").startswith("plugin:"):
        return False
    return kind == "summary" or created_by is None or created_by.startswith("agent:")


def redact_copies(
    conn: Connection, report: PurgeReport, principal: str, quotes: Quotes, theirs: dict[int, str], names: set[str]
) -> list[int]:
    """Cut the erased user's words (`quotes`; `theirs` = their fact id → text, already deleted)
    out of what is left: bot and plugin messages (with their provenance: the facts a reply was
    written from, the users a proactive message was about), machine-written facts and their
    history, facts' context, and entity aliases in their name ("alice s sister" for any of their
    display `names`). A message sent only about them with no conversation is deleted. Counts go
    to `report` (`redacted`, `messages`); returns the ids of facts whose text changed."""
    their_ids = set(theirs)
    # ---- messages written by the bot (replies) or by plugins (proactive messages)
    cands: list[_Candidate] = []
    used_by_message: dict[int, set[int]] = {}
    q = select(MessageRow.id, MessageRow.session_id, MessageRow.content, MessageRow.provenance).where(
        MessageRow.role != "user"
    )
    if not quotes and not their_ids:  # nothing of theirs left to find: only messages naming them
        needle = principal.replace("\\", "").replace("%", "").replace("_", "")
        q = q.where(cast(MessageRow.provenance, String).like(f"%{needle}%"))
    for r in conn.execute(q, execution_options=_STREAM):
        facts, users = _provenance(r.provenance)
        used = facts & their_ids
        if used:
            used_by_message[r.id] = used
        if used or principal in users or (quotes and quotes.may_quote(r.content)):
            cands.append(_Candidate(r.id, r.session_id, r.content, r.provenance, facts, users))
    about_them = {c.id for c in cands if c.session_id is None and c.users and c.users <= {principal}}
    for chunk in _chunks(sorted(about_them)):
        report.messages += conn.execute(delete(MessageRow).where(MessageRow.id.in_(chunk))).rowcount
    cands = [c for c in cands if c.id not in about_them]
    turns: dict[int, list[str]] = defaultdict(list)
    sessions = sorted({c.session_id for c in cands if c.session_id is not None})
    for chunk in _chunks(sessions):
        for r in conn.execute(
            select(MessageRow.session_id, MessageRow.content).where(
                MessageRow.session_id.in_(chunk), MessageRow.role == "user"
            )
        ):
            turns[r.session_id].append(r.content)
    # The other facts a reply was written from explain its words, except where they are themselves
    # machine-written copies of the erased user's words (an agent's fact quoting them).
    others = _texts(conn, sorted({i for c in cands for i in c.facts - their_ids}), quotes)
    for c in cands:
        allowed = turns.get(c.session_id, []) + [others[i] for i in c.facts - their_ids if i in others]
        new = quotes.redact(c.content, allowed=allowed, used=[theirs[i] for i in sorted(c.facts & their_ids)])
        prov = _without(c.provenance, their_ids, principal)
        if new is None and prov == c.provenance:
            continue
        conn.execute(update(MessageRow).where(MessageRow.id == c.id).values(content=new or c.content, provenance=prov))
        report.redacted += new is not None

    # ---- facts: machine-written text (summaries, agents' facts) and every fact's context
    fact_cands = []
    if not quotes and not used_by_message:
        return []
    q = select(
        FactRow.id,
        FactRow.content,
        FactRow.context,
        FactRow.kind,
        FactRow.created_by,
        FactRow.source_ref,
        FactRow.source_message_ids,
    )
    for r in conn.execute(q, execution_options=_STREAM):
        machine = _machine_written(r.kind, r.created_by, r.source_ref)
        sources = [int(m) for m in r.source_message_ids or ()]
        used = set().union(*(used_by_message.get(m, set()) for m in sources)) if machine else set()
        if (machine and (used or (quotes and quotes.may_quote(r.content)))) or (
            r.context and quotes and quotes.may_quote(r.context)
        ):
            fact_cands.append((r, machine, sources, used))
    sources = sorted({m for _, machine, srcs, _ in fact_cands if machine for m in srcs})
    human: dict[int, str] = {}
    for chunk in _chunks(sources):
        human.update(
            conn.execute(
                select(MessageRow.id, MessageRow.content).where(MessageRow.id.in_(chunk), MessageRow.role == "user")
            ).all()
        )
    changed: list[int] = []
    for r, machine, srcs, used in fact_cands:
        allowed = [human[m] for m in srcs if m in human]
        used_texts = [theirs[i] for i in sorted(used)]
        values = {}
        if machine:
            new = quotes.redact(r.content, allowed=allowed, used=used_texts)
            if new is not None:
                values["content"] = new
        if r.context:
            new_context = quotes.redact(r.context, allowed=[r.content])
            if new_context is not None:
                values["context"] = new_context
        if not values:
            continue
        conn.execute(update(FactRow).where(FactRow.id == r.id).values(**values))
        if "content" in values:  # earlier versions of the same machine-written text
            for h in conn.execute(
                select(FactHistoryRow.id, FactHistoryRow.old_content, FactHistoryRow.new_content).where(
                    FactHistoryRow.fact_id == r.id
                )
            ).all():
                old = quotes.redact(h.old_content, allowed=allowed, used=used_texts)
                new = quotes.redact(h.new_content, allowed=allowed, used=used_texts)
                if old is not None or new is not None:
                    conn.execute(
                        update(FactHistoryRow)
                        .where(FactHistoryRow.id == h.id)
                        .values(old_content=old or h.old_content, new_content=new or h.new_content)
                    )
        changed.append(r.id)
        report.redacted += 1

    # ---- aliases given in their name ("alice's sister") on entities others still use
    prefixes = tuple(f"{n} s " for n in (norm_name(x) for x in names if x) if n)
    if prefixes or quotes:
        for r in conn.execute(select(EntityRow.id, EntityRow.aliases).where(EntityRow.aliases.is_not(None))).all():
            aliases = list(r.aliases or [])
            keep = [a for a in aliases if not a.startswith(prefixes) and quotes.redact(a) is None]
            if keep != aliases:
                conn.execute(update(EntityRow).where(EntityRow.id == r.id).values(aliases=keep))
                report.redacted += 1
    return changed


def _texts(conn: Connection, fact_ids: list[int], quotes: Quotes) -> dict[int, str]:
    """Fact id → text, machine-written texts with the erased user's quotes already cut."""
    out: dict[int, str] = {}
    cols = (FactRow.id, FactRow.content, FactRow.kind, FactRow.created_by, FactRow.source_ref)
    for chunk in _chunks(fact_ids):
        for r in conn.execute(select(*cols).where(FactRow.id.in_(chunk))):
            machine = _machine_written(r.kind, r.created_by, r.source_ref)
            out[r.id] = (quotes.redact(r.content) if machine and quotes else None) or r.content
    return out


def _chunks(seq: list, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
