"""Hybrid recall: candidates from inside the scope partition, then normalised-score fusion.

Candidates: the top `n` facts by full text (SQLite FTS5 / PostgreSQL tsvector; the query is an OR
of its content words — on SQLite, when that would match more than LEXICAL_BUDGET facts of the
scope, evaluated in tiers that skip only rows bm25 ranks low, see `Recaller._tiers`) and the top
`n` by embedding similarity (vector index). Both queries carry the scope and status filter
themselves — a hard partition, never a filter on a global top-k.
Both are run on the query WITHOUT the names of the speakers it mentions (entities of the scope
that speak a fact linked to them: "What did Caroline research?" is searched as "What did
research?"): who is asked about is the entity signal's job below. Left in, a speaker's name matches
the "Caroline: ..." prefix of every one of her turns lexically (with a high IDF when several
conversations share the index) and pulls the query vector towards her turns in general instead of
the topic (LoCoMo R@10 0.756 -> 0.785, better in each of the five conversations; see
`clara bench locomo`). Names of entities that are only mentioned stay in the query.

Each candidate gets four signals, each min-max normalised over the candidate set:
  lexical       full-text score of the fact's own text
  lexical_ctx   full-text score of its text plus its context (the preceding turn, when stored)
  dense         cosine(query, fact vector)
  dense_ctx     dense + 0.5 * cosine(query, previous turn's vector)  — the turn read in context
The fused score is their sum, then
  + 0.3 * max(score of the previous turn, score of the next turn)   (neighbour smoothing: answers
    in a conversation span adjacent turns; neighbours are consecutive facts of the same scope
    within 6 hours of each other)
  + 0.3 * (max - min fused score) * share of the entities named in the query that the fact is
    linked to (a turn's speaker is such an entity; naming both speakers boosts nobody)
  + tiny priors for importance and decayed relevance (tie-breakers only).
What is true now comes first: + 0.6 * spread for a fact holding an attribute key the question is
about (`attributes`, from the caller's question classifier; such facts are candidates even without
a word in common), - 1.0 * spread for a fact that no longer holds (superseded, or its world-time
validity ended) or is a question/small talk, - 0.5 * spread for a session summary when the question
names attributes (their statements answer it, not a digest of a past conversation); in history
mode (a question about the past) what no longer holds gets + 0.5 * spread instead. Every hit says
whether it is current.
On the LoCoMo development set this fusion gives R@10 ≈ 0.785 against 0.526 for BM25 and 0.58 for
rank fusion of BM25 and dense (see `clara bench locomo`); the weights are round numbers chosen on
that set, not fitted per question.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import String, bindparam, func, select, text, type_coerce
from sqlalchemy.orm import aliased

from storage.models import EntityRow, FactEntityRow, FactRow
from storage.text import (
    MAX_QUERY_CHARS,
    clean_text,
    norm_name,
    query_terms,
    scope_token,
    strip_accents,
    without_names,
    words,
)
from storage.types import FactStatus, RecallHit

if TYPE_CHECKING:
    from storage.store import FactStore

W_PREV_DENSE = 0.5
W_NEIGHBOUR = 0.3
W_ENTITY = 0.3
W_PRIOR = 0.01
W_ATTRIBUTE = 0.6  # x spread: the fact holds an attribute key the question is about
W_STALE = 1.0  # x spread, subtracted: no longer true, or a question/small talk (current first)
W_HISTORY = 0.5  # x spread, added in history mode to what is no longer true
W_SUMMARY = 0.5  # x spread, subtracted from session summaries when the question names an attribute
ATTRIBUTE_CANDIDATES = 20  # newest facts per query fetched by attribute key
NEIGHBOUR_GAP = timedelta(hours=6)
SIGNALS = ("lexical", "lexical_ctx", "dense", "dense_ctx")


def _any(terms: Iterable[str]) -> str:
    """FTS5 OR of quoted tokens."""
    return " OR ".join(f'"{t}"' for t in terms)


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


class Recaller:
    def __init__(self, store: FactStore):
        self.store = store
        self._stats: dict = {}  # key -> (value, when computed): see `_tiers`

    async def recall(
        self,
        query: str,
        scopes: list[str],
        k: int,
        *,
        kinds: Sequence[str] | None,
        include_superseded: bool,
        attributes: Sequence[str] = (),
        history: bool = False,
    ) -> list[RecallHit]:
        from storage.store import _fact

        q = clean_text(query, "query", MAX_QUERY_CHARS)
        k = max(1, min(int(k), 200))
        statuses = ("active", "superseded") if include_superseded else ("active",)
        n = max(50, 4 * k)
        entity_ids, names, keyed = await self.store.engines.run_read(
            self._prelude, q, scopes, statuses, list(attributes)
        )
        topic = without_names(q, names)  # the entity signal covers the names (module docstring)
        dense_task = asyncio.create_task(self.dense(topic, scopes, statuses, n))
        lexical = await self.store.engines.run_read(self.lexical, topic, scopes, statuses, n)
        qvec, dense = await dense_task
        cand = list(dict.fromkeys([i for i, *_ in lexical] + [i for i, _ in dense] + keyed))
        if not cand:
            return []
        # Cosines for every candidate (fetched while the candidates are hydrated) and every
        # previous neighbour (same scopes) that is not a candidate itself.
        cos = dict(dense)
        cand_cos = asyncio.create_task(self.store.index.cosines([i for i in cand if i not in cos], qvec))
        try:
            rows, prev_of, next_of, links = await self.store.engines.run_read(
                self._hydrate, cand, scopes, statuses, kinds, entity_ids
            )
        finally:
            cos.update(await cand_cos)
        if not rows:
            return []
        ids = [r.id for r in rows]
        cos.update(await self.store.index.cosines([p for p in set(prev_of.values()) if p not in cos], qvec))
        lex = {fid: (s1, s2) for fid, s1, s2 in lexical}
        raw = np.zeros((len(ids), 4))
        for j, fid in enumerate(ids):
            s1, s2 = lex.get(fid, (0.0, 0.0))
            d = cos.get(fid, 0.0)
            p = cos.get(prev_of.get(fid), 0.0) if fid in prev_of else 0.0
            raw[j] = (s1, s2, d, d + W_PREV_DENSE * p)
        fused = sum(_minmax(raw[:, c]) for c in range(4))
        # Neighbour smoothing (only neighbours that are themselves candidates contribute).
        pos = {fid: j for j, fid in enumerate(ids)}
        smooth = fused.copy()
        for j, fid in enumerate(ids):
            nb = [fused[pos[x]] for x in (prev_of.get(fid), next_of.get(fid)) if x in pos]
            if nb:
                smooth[j] += W_NEIGHBOUR * max(nb)
        spread = float(smooth.max() - smooth.min()) or 1.0
        dense_rank = {fid: r for r, (fid, _) in enumerate(dense, 1)}
        lexical_rank = {fid: r for r, (fid, *_) in enumerate(lexical, 1)}
        keys = set(attributes)
        now = _naive(self.store.clock())
        current: dict[int, bool] = {}
        scored = []
        for j, row in enumerate(rows):
            signals = {name: round(float(raw[j, c]), 4) for c, name in enumerate(SIGNALS) if raw[j, c]}
            score = float(smooth[j])
            if entity_ids:
                share = len(links.get(row.id, ())) / len(entity_ids)
                if share:
                    signals["entity"] = round(share, 3)
                    score += W_ENTITY * spread * share
            if row.id in dense_rank:
                signals["dense_rank"] = dense_rank[row.id]
            if row.id in lexical_rank:  # matched the query's words (bm25 may be ~0 in a tiny scope)
                signals["lexical_rank"] = lexical_rank[row.id]
            if row.attr is not None and row.attr in keys:
                signals["attribute"] = 1.0
                score += W_ATTRIBUTE * spread
            holds = current[row.id] = row.status == "active" and (row.valid_to is None or _naive(row.valid_to) > now)
            if history:
                if not holds:
                    score += W_HISTORY * spread
            elif not holds or row.kind == "question":
                score -= W_STALE * spread  # what is true now first; questions are not answers
            elif keys and row.kind == "summary":
                score -= W_SUMMARY * spread  # asked about one attribute: its statements first
            score += W_PRIOR * (row.importance + row.relevance)
            scored.append((score, row.id, signals))
        scored.sort(key=lambda t: (-t[0], -t[1]))
        top = scored[:k]
        full = await self.store.engines.run_read(self._rows, [fid for _, fid, _ in top])
        return [
            RecallHit(_fact(full[fid]), score, signals, current=current[fid])
            for score, fid, signals in top
            if fid in full
        ]

    @staticmethod
    def _rows(conn, ids: list[int]) -> dict:
        return {r.id: r for r in conn.execute(select(FactRow).where(FactRow.id.in_(ids))).all()}

    async def dense(
        self, q: str, scopes: list[str], statuses: Sequence[str], n: int
    ) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """The query vector and up to `n` (fact id, cosine) from the vector index within `scopes`."""
        qvec = await asyncio.to_thread(self.store.embedder.embed_query, q)
        return qvec, await self.store.index.search(qvec, scopes, n, tuple(statuses))

    def lexical(
        self, conn, q: str, scopes: list[str], statuses: Sequence[str], n: int
    ) -> list[tuple[int, float, float]]:
        """Up to `n` (fact id, text score, text+context score) from full text within `scopes`,
        best (by text+context) first; higher is better."""
        terms = query_terms(q)
        if not terms:
            return []
        if self.store.dialect == "sqlite":
            return self._lexical_sqlite(conn, terms, scopes, statuses, n)
        else:
            stmt = text(
                "SELECT id, ts_rank('{0, 0, 0, 1}', tsv, q, 1) AS s1, ts_rank('{0, 0, 1, 1}', tsv, q, 1) AS s2 "
                "FROM facts, to_tsquery('english', :m) q "
                "WHERE tsv @@ q AND scope_id IN :scopes AND status IN :st ORDER BY s2 DESC LIMIT :n"
            ).bindparams(bindparam("scopes", expanding=True), bindparam("st", expanding=True))
            folded = list(dict.fromkeys(strip_accents(t) for t in terms))  # as the index (migration 0006)
            params = {"m": " | ".join(folded), "scopes": scopes, "st": list(statuses), "n": n}
        return [(r.id, float(r.s1), float(r.s2)) for r in conn.execute(stmt, params).all()]

    # Rows bm25 may score for one query before the query is evaluated in tiers (1.5-2.5 us a row,
    # plus walking the posting lists). 2,500 rather than 5,000: with the five LoCoMo conversations
    # recalled over their scope plus a scope of 100K distractor facts, R@10 was .740 at 5,000 and
    # .740 at 2,500 (.738 at 1,500 and with no budget at all), while a 100K-scope recall's lexical
    # step went from 16-17 to 11-13 ms p50 (and 29-30 to 14-17 ms p95) on a 2-core box.
    LEXICAL_BUDGET = 2500
    STATS_TTL_S = 300.0  # how long a statistic of `_tiers` is reused

    def _lexical_sqlite(self, conn, terms: list[str], scopes: list[str], statuses: Sequence[str], n: int):
        """FTS5 candidates. Scope and status are matched inside the FTS query (indexed token
        columns): the partition is applied by the index itself and no join with `facts` is needed.
        The status is written as NOT the other statuses: "active" is on nearly every row, and an
        AND with it walks that whole posting list (and bm25 reads all of it for its IDF); the other
        statuses are short lists. bm25 does not depend on the boolean shape of the MATCH, only on
        which of its phrases a row contains, so the tiers of `_tiers` score each row they return
        as the plain OR of the terms would."""
        scope_q = _any(scope_token(s) for s in scopes)
        others = [st.value for st in FactStatus if st.value not in statuses]
        not_q = f" NOT {{status}} : ({_any(others)})" if others else ""
        where = f"{{scope_token}} : ({scope_q}) AND {{content context}} : (@TERMS@){not_q}"
        exprs = self._tiers(conn, terms, scopes, statuses, where)
        stmt = text(
            "SELECT rowid AS id, -bm25(facts_fts, 1.0, 0.0, 0.0, 0.0) AS s1, "
            "-bm25(facts_fts, 1.0, 1.0, 0.0, 0.0) AS s2 "
            "FROM facts_fts WHERE facts_fts MATCH :m ORDER BY s2 DESC LIMIT :n"
        )
        out = [
            (r.id, float(r.s1), float(r.s2))
            for e in exprs
            for r in conn.execute(stmt, {"m": where.replace("@TERMS@", e), "n": n}).all()
        ]
        return sorted(out, key=lambda r: -r[2])[:n] if len(exprs) > 1 else out

    def _tiers(self, conn, terms: list[str], scopes: list[str], statuses: Sequence[str], where: str) -> list[str]:
        """The MATCH expressions (of disjoint row sets) to evaluate for `terms`.

        bm25 scores every row that matches, ~1.5 us a row, and chat questions are made of
        frequent words: they match 15% of a LoCoMo conversation's turns at the median, 40% at
        p90, so the cost grows with the scope (100K facts: 30-60 ms). Up to LEXICAL_BUDGET
        matching rows (always in a scope of at most that many facts) the query is the plain OR of
        its terms. Above it:
        - terms on at least half of the index's rows are dropped: FTS5 clamps their IDF (<= 0)
          to 1e-6, so they add nothing to any score (a word the stemmer reduces to a stopword,
          "Ines" -> "in", is one);
        - then, if still above the budget, the query is evaluated in tiers: rows with any of the
          rarest terms (as many terms as fit in the budget by document frequency) OR with all of
          the other, frequent, terms. Only rows that contain some but not all of the frequent
          terms and none of the rare ones are skipped; bm25 ranks those low (frequent terms have
          a low IDF), and each row returned keeps its exact score.
        Document frequencies are counted over the whole index (the IDF's own statistic, an upper
        bound of the scope's). They, the scope's size class and max(id) are cached for
        STATS_TTL_S: they only steer this choice, never the partition or the scores."""
        budget = self.LEXICAL_BUDGET

        def stat(key, fn):  # a cached statistic (scope size class, max id, document frequency)
            hit = self._stats.get(key)
            if hit is None or now - hit[1] > self.STATS_TTL_S:
                if len(self._stats) > 20_000:
                    self._stats.clear()
                hit = self._stats[key] = (fn(), now)
            return hit[0]

        now = time.monotonic()
        large = stat(
            ("large", tuple(scopes), tuple(statuses)),
            lambda: (
                conn.execute(
                    select(func.count()).select_from(
                        select(FactRow.id)
                        .where(FactRow.scope_id.in_(scopes), FactRow.status.in_(list(statuses)))
                        .limit(budget + 1)
                        .subquery()
                    )
                ).scalar()
                > budget
            ),
        )
        if not large:
            return [_any(terms)]
        count = text("SELECT count(*) FROM (SELECT 1 FROM facts_fts WHERE facts_fts MATCH :m LIMIT :cap)")
        # Half the rows of the index, at least (it has at most max(id) rows).
        half = stat("half", lambda: (conn.execute(select(func.max(FactRow.id))).scalar() or 0) // 2 + 1)
        df = {}
        for t in terms:
            m = f'{{content context}} : "{t}"'
            df[t] = stat(("df", t), lambda m=m: conn.execute(count, {"m": m, "cap": half}).scalar())
        terms = [t for t in terms if df[t] < half]
        if not terms:
            return []
        if len(terms) == 1 or sum(df[t] for t in terms) <= budget:
            return [_any(terms)]
        if conn.execute(count, {"m": where.replace("@TERMS@", _any(terms)), "cap": budget + 1}).scalar() <= budget:
            return [_any(terms)]
        rare: list[str] = []
        used = 0
        for t in sorted(terms, key=lambda t: df[t]):
            if used + df[t] > budget:
                break
            rare.append(t)
            used += df[t]
        frequent = [t for t in terms if t not in rare]
        all_frequent = " AND ".join(f'"{t}"' for t in frequent)
        if not rare:
            return [all_frequent]
        if len(frequent) == 1:  # "rare OR frequent" would be the whole query: rare rows with it, without it
            return [f"({_any(rare)}) AND {all_frequent}", f"({_any(rare)}) NOT {all_frequent}"]
        return [f"{_any(rare)} OR ({all_frequent})"]

    @classmethod
    def _prelude(
        cls, conn, q: str, scopes: list[str], statuses: Sequence[str], attributes: list[str]
    ) -> tuple[list[int], list[str], list[int]]:
        """One read for what the query names: entity mentions (see `entity_mentions`) and the ids
        of the newest facts holding one of the question's attribute keys (index on scope, attr)."""
        entity_ids, names = cls.entity_mentions(conn, q, scopes)
        keyed: list[int] = []
        if attributes:
            keyed = list(
                conn.execute(
                    select(FactRow.id)
                    .where(
                        FactRow.scope_id.in_(scopes),
                        FactRow.attr.in_(attributes),
                        FactRow.status.in_(list(statuses)),
                    )
                    .order_by(FactRow.id.desc())
                    .limit(ATTRIBUTE_CANDIDATES)
                ).scalars()
            )
        return entity_ids, names, keyed

    @staticmethod
    def entity_mentions(conn, q: str, scopes: list[str]) -> tuple[list[int], list[str]]:
        """Ids of the entities in `scopes` whose normalised name is a 1-3 word n-gram of the query,
        and the normalised names of those among them that are speakers (of a fact linked to them)."""
        toks = words(q)
        grams = {" ".join(toks[i : i + n]) for n in (1, 2, 3) for i in range(len(toks) - n + 1)}
        grams = {norm_name(g) for g in grams if g}
        if not grams:
            return [], []
        rows = conn.execute(_mentions_stmt(), {"scopes": list(scopes), "grams": sorted(grams)[:500]}).all()
        return [r.id for r in rows], sorted({r.norm_name for r in rows if r.speaks})

    @staticmethod
    def _hydrate(conn, ids, scopes, statuses, kinds, entity_ids):
        """Candidate rows (re-checked against scopes/status/kinds) with the ids of their previous
        and next neighbours (same scope, same statuses, within NEIGHBOUR_GAP), and their links to
        the query's entities. One statement for rows and neighbours, one for links."""
        q = _hydrate_stmt(bool(kinds))
        params = {"ids": list(ids), "scopes": list(scopes), "statuses": list(statuses)}
        if kinds:
            params["kinds"] = list(kinds)
        links: dict[int, set[int]] = {}
        rows = conn.execute(q, params).all()
        if rows and entity_ids:
            link_q = select(FactEntityRow.fact_id, FactEntityRow.entity_id).where(
                FactEntityRow.entity_id.in_(entity_ids), FactEntityRow.fact_id.in_([r.id for r in rows])
            )
            for fid, eid in conn.execute(link_q).all():
                links.setdefault(fid, set()).add(eid)

        def close(a, b) -> bool:
            return a is not None and b is not None and abs(_naive(a) - _naive(b)) <= NEIGHBOUR_GAP

        prev_of = {r.id: r.prev_id for r in rows if close(r.at, r.prev_at)}
        next_of = {r.id: r.next_id for r in rows if close(r.at, r.next_at)}
        return rows, prev_of, next_of, links


@functools.cache
def _mentions_stmt():
    """The statement of `Recaller.entity_mentions`, built once: parameters `scopes` and `grams`."""
    # Whether the entity is the speaker of a fact it is linked to (stops at the first such link).
    speaks = (
        select(FactEntityRow.fact_id)
        .join(FactRow, FactRow.id == FactEntityRow.fact_id)
        .where(FactEntityRow.entity_id == EntityRow.id, func.lower(FactRow.speaker) == func.lower(EntityRow.name))
        .exists()
    )
    return select(EntityRow.id, EntityRow.norm_name, speaks.label("speaks")).where(
        EntityRow.scope_id.in_(bindparam("scopes", expanding=True)),
        EntityRow.norm_name.in_(bindparam("grams", expanding=True)),
    )


@functools.cache
def _hydrate_stmt(with_kinds: bool):
    """The statement of `Recaller._hydrate`, built once (building it costs more than running it):
    parameters `ids`, `scopes`, `statuses` and, `with_kinds`, `kinds`.

    Neighbours come from the stored `prev_id` (migration 0004): the previous fact is a primary-key
    seek, the next one (the first fact whose prev_id is this one) an index seek on prev_id — on
    both dialects, whatever the size of the scope or how its facts interleave with others'."""
    statuses = bindparam("statuses", expanding=True)
    pv, xv = aliased(FactRow), aliased(FactRow)
    # ORDER BY id + 0: the 1-2 rows of the prev_id seek are sorted, rather than letting a planner
    # without fresh statistics walk the primary key in id order looking for prev_id matches.
    next_id = (
        select(xv.id)
        .where(xv.prev_id == FactRow.id, xv.status.in_(statuses))
        .order_by(xv.id + 0)
        .limit(1)
        .correlate(FactRow)
        .scalar_subquery()
    )
    nv = aliased(FactRow)
    q = (
        select(
            FactRow.id,
            FactRow.importance,
            FactRow.relevance,
            FactRow.status,
            FactRow.kind,
            FactRow.attr,
            raw(FactRow.valid_to).label("valid_to"),
            raw(func.coalesce(FactRow.valid_from, FactRow.created_at)).label("at"),
            pv.id.label("prev_id"),
            raw(pv.valid_from).label("prev_at"),
            next_id.label("next_id"),
            raw(select(nv.valid_from).where(nv.id == next_id).scalar_subquery()).label("next_at"),
        )
        .outerjoin(pv, (pv.id == FactRow.prev_id) & pv.status.in_(statuses))
        .where(
            FactRow.id.in_(bindparam("ids", expanding=True)),
            # `scope_id || ''`: same partition, but keeps the planner on the primary key (a handful
            # of ids) instead of walking the (scope, status) index over every fact of a large scope.
            FactRow.scope_id.concat("").in_(bindparam("scopes", expanding=True)),
            FactRow.status.concat("").in_(statuses),
        )
    )
    if with_kinds:
        q = q.where(FactRow.kind.in_(bindparam("kinds", expanding=True)))
    return q


def raw(expr):
    """Skip SQLAlchemy's per-row datetime processing (regex parsing on SQLite) for timestamps
    only compared here; `_naive` parses the driver's value (ISO text or datetime)."""
    return type_coerce(expr, String)


def _naive(d):
    """A naive UTC datetime from the driver's value (SQLite stores naive UTC, PostgreSQL returns
    aware values in the session's zone)."""
    if isinstance(d, str):  # SQLite returns scalar-subquery datetimes as text
        d = datetime.fromisoformat(d)
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo else d
