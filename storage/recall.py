"""Hybrid recall: candidate generation inside the scope partition, then weighted rank fusion.

1. Lexical candidates: SQLite FTS5 `bm25()` over content (weight 1) and context (weight 0.3), or
   PostgreSQL `ts_rank` over a weighted tsvector; the query is an OR of its content words.
2. Dense candidates: cosine nearest neighbours of the query embedding in the vector index.
   Both queries carry the scope (and status) filter themselves: a hard partition, never a filter
   applied to a global top-k.
3. Fusion: weighted reciprocal rank fusion (Cormack et al. 2009, k=60) of the lexical and dense
   ranks, plus a bonus for facts linked to an entity the query names (the speaker of a turn is such
   an entity), plus small priors for importance and decayed relevance.
4. Neighbour smoothing: turns next to a strong match (same scope, consecutive source turns) get a
   share of its score, because conversations answer across adjacent turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, text

from storage.models import EntityRow, FactEntityRow, FactRow
from storage.text import MAX_QUERY_CHARS, clean_text, norm_name, query_terms, words
from storage.types import RecallHit

if TYPE_CHECKING:
    from storage.store import FactStore

RRF_K = 60.0
W_LEXICAL = 1.0
W_DENSE = 1.0
W_ENTITY = 0.5
W_IMPORTANCE = 0.002
W_RELEVANCE = 0.002


class Recaller:
    def __init__(self, store: FactStore):
        self.store = store

    async def recall(
        self, query: str, scopes: list[str], k: int, *, kinds: Sequence[str] | None, include_superseded: bool
    ) -> list[RecallHit]:
        from storage.store import _fact

        q = clean_text(query, "query", MAX_QUERY_CHARS)
        k = max(1, min(int(k), 200))
        statuses = ("active", "superseded") if include_superseded else ("active",)
        n = max(50, 4 * k)
        lexical, dense, entity_ids = await asyncio.gather(
            self.lexical(q, scopes, statuses, n),
            self.dense(q, scopes, statuses, n),
            self.entity_mentions(q, scopes),
        )
        cand = dict.fromkeys([i for i, _ in lexical] + [i for i, _ in dense])
        if not cand:
            return []
        rows, linked = await self._hydrate(list(cand), scopes, statuses, kinds, entity_ids)
        lex_rank = {fid: r for r, (fid, _) in enumerate(lexical, 1)}
        dense_rank = {fid: r for r, (fid, _) in enumerate(dense, 1)}
        dense_sim = dict(dense)
        hits = []
        for row in rows:
            signals: dict[str, float] = {}
            score = 0.0
            if row.id in lex_rank:
                signals["lexical"] = lex_rank[row.id]
                score += W_LEXICAL / (RRF_K + lex_rank[row.id])
            if row.id in dense_rank:
                signals["dense"] = dense_rank[row.id]
                signals["dense_sim"] = round(dense_sim[row.id], 4)
                score += W_DENSE / (RRF_K + dense_rank[row.id])
            if row.id in linked:
                signals["entity"] = 1
                score += W_ENTITY / (RRF_K + 1) * 0.1
            score += W_IMPORTANCE * row.importance + W_RELEVANCE * row.relevance
            hits.append(RecallHit(_fact(row), score, signals))
        hits.sort(key=lambda h: (-h.score, -h.fact.id))
        return hits[:k]

    async def lexical(self, q: str, scopes: list[str], statuses: Sequence[str], n: int) -> list[tuple[int, float]]:
        """Up to `n` (fact id, score) from full-text search within `scopes`, best first."""
        terms = query_terms(q)
        if not terms:
            return []
        if self.store.dialect == "sqlite":
            match = " OR ".join(f'"{t}"' for t in terms)
            stmt = text(
                "SELECT f.id AS id, bm25(facts_fts, 1.0, 0.3) AS s FROM facts_fts "
                "JOIN facts f ON f.id = facts_fts.rowid "
                "WHERE facts_fts MATCH :m AND f.scope_id IN :scopes AND f.status IN :st "
                "ORDER BY s LIMIT :n"
            ).bindparams(bindparam("scopes", expanding=True), bindparam("st", expanding=True))
            params = {"m": match, "scopes": scopes, "st": list(statuses), "n": n}
        else:
            stmt = text(
                "SELECT id, ts_rank(tsv, q, 1) AS s FROM facts, to_tsquery('english', :m) q "
                "WHERE tsv @@ q AND scope_id IN :scopes AND status IN :st ORDER BY s DESC LIMIT :n"
            ).bindparams(bindparam("scopes", expanding=True), bindparam("st", expanding=True))
            params = {"m": " | ".join(terms), "scopes": scopes, "st": list(statuses), "n": n}
        async with self.store.engines.reader.connect() as conn:
            return [(r.id, float(r.s)) for r in (await conn.execute(stmt, params)).all()]

    async def dense(self, q: str, scopes: list[str], statuses: Sequence[str], n: int) -> list[tuple[int, float]]:
        """Up to `n` (fact id, cosine) from the vector index within `scopes`, best first."""
        vec = await asyncio.to_thread(self.store.embedder.embed_query, q)
        return await self.store.index.search(vec, scopes, n, tuple(statuses))

    async def entity_mentions(self, q: str, scopes: list[str]) -> list[int]:
        """Ids of entities in `scopes` whose normalised name is a 1-3 word n-gram of the query."""
        toks = words(q)
        grams = {" ".join(toks[i : i + n]) for n in (1, 2, 3) for i in range(len(toks) - n + 1)}
        grams = {g for g in grams if g and g.split()[0] not in ("the", "a")}
        if not grams:
            return []
        # Possessives: "Caroline's" tokenises to "caroline", "s"; both forms are tried.
        grams |= {norm_name(g) for g in grams}
        async with self.store.engines.reader.connect() as conn:
            rows = await conn.execute(
                select(EntityRow.id).where(EntityRow.scope_id.in_(scopes), EntityRow.norm_name.in_(list(grams)[:500]))
            )
            return list(rows.scalars().all())

    async def _hydrate(self, ids, scopes, statuses, kinds, entity_ids):
        q = select(FactRow).where(FactRow.id.in_(ids), FactRow.scope_id.in_(scopes), FactRow.status.in_(list(statuses)))
        if kinds:
            q = q.where(FactRow.kind.in_(list(kinds)))
        async with self.store.engines.reader.connect() as conn:
            rows = (await conn.execute(q)).all()
            linked: set[int] = set()
            if entity_ids and rows:
                linked = set(
                    (
                        await conn.execute(
                            select(FactEntityRow.fact_id).where(
                                FactEntityRow.entity_id.in_(entity_ids), FactEntityRow.fact_id.in_([r.id for r in rows])
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
        return rows, linked
