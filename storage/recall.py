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
  + tiny priors for importance and decayed relevance (tie-breakers only)
  + W_ACCESS * spread * access prior, bounded to [0, 1]: min(1, log2(1 + access_count) / log2(1 +
    ACCESS_SATURATION)) * 0.5 ** (days since last access / ACCESS_HALF_LIFE_DAYS) — how often, and
    how lately, the fact was actually shown (chat context, !recall, the recall tool, MCP results:
    `FactStore.note_access`); 0 for a fact never shown.
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
from sqlalchemy import bindparam, case, extract, func, select, text, true
from sqlalchemy.orm import aliased

from storage.models import EntityRow, FactEntityRow, FactRow
from storage.naming import t as tname
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
W_ACCESS = 0.03  # x spread: the access prior (chosen on LoCoMo dev: `clara bench locomo --access`, README)
ACCESS_SATURATION = 8  # accesses at which the prior's count part reaches 1
ACCESS_HALF_LIFE_DAYS = 30.0  # the prior halves for every 30 days since the last access
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


class Recaller:
    """The recall algorithm of the module docstring, for one `FactStore`.

    `off` switches signals off, for `clara bench ablation` only (the bot never sets it): any of
    SIGNALS (that column's weight becomes 0), "neighbour", "entity", "access", "names" (speaker names stay
    in the searched query), "lexical_path" (no full-text candidates) or "dense_path" (no vector
    search; the dense signals of lexical candidates still come from their stored vectors)."""

    def __init__(self, store: FactStore):
        self.store = store
        self._stats: dict = {}  # key -> (value, when computed): see `_tiers`
        self.off: frozenset[str] = frozenset()
        self.w_access = W_ACCESS  # benchmarks sweep it (`clara bench locomo --access`)

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
        """Up to `k` hits, best first (see the module docstring).

        Round trips: one read (entities named, attribute-keyed ids, then the full-text
        candidates; the searched text is handed to the event loop as soon as it is known, so the
        query embedding and vector search overlap the full-text query), one read for the
        candidates' light columns and neighbours, one for the final `k` rows; and on the vector
        index one search and one retrieval of the candidates' and neighbours' missing vectors.
        Fusion is vectorised over the candidates (numpy arrays of shape (n,)); Python objects
        are built for the final `k` only."""
        from storage.store import _fact

        q = clean_text(query, "query", MAX_QUERY_CHARS)
        k = max(1, min(int(k), 200))
        statuses = ("active", "superseded") if include_superseded else ("active",)
        n = max(50, 4 * k)
        off = self.off
        loop = asyncio.get_running_loop()
        topic_ready: asyncio.Future[str] = loop.create_future()

        def first(conn):
            entity_ids, names, keyed = self._prelude(conn, q, scopes, statuses, list(attributes))
            topic = q if "names" in off else without_names(q, names)  # the entity signal covers the names
            loop.call_soon_threadsafe(_resolve, topic_ready, topic)
            lexical = [] if "lexical_path" in off else self.lexical(conn, topic, scopes, statuses, n)
            return entity_ids, keyed, lexical

        first_task = asyncio.ensure_future(self.store.engines.run_read(first))
        try:
            await asyncio.wait((topic_ready, first_task), return_when=asyncio.FIRST_COMPLETED)
            if not topic_ready.done():  # the read failed before the text was known
                await first_task
            dense_task = asyncio.ensure_future(self.dense(topic_ready.result(), scopes, statuses, n))
        except BaseException:
            first_task.cancel()
            raise
        try:
            entity_ids, keyed, lexical = await first_task
        except BaseException:
            dense_task.cancel()
            raise
        qvec, dense = await dense_task
        lex_ids = np.fromiter((r[0] for r in lexical), dtype=np.int64, count=len(lexical))
        dense_ids = np.fromiter((i for i, _ in dense), dtype=np.int64, count=len(dense))
        cand = list(dict.fromkeys([*lex_ids.tolist(), *dense_ids.tolist(), *keyed]))
        if not cand:
            return []
        now = self.store.clock()  # compared in SQL: naive UTC text on SQLite, aware on PostgreSQL
        if self.store.dialect == "sqlite":
            now = _naive(now)
        rows = await self.store.engines.run_read(
            self._hydrate, cand, scopes, statuses, kinds, entity_ids, self.store.dialect, now
        )
        if rows is None:
            return []
        ids, importance, relevance, holds, kind, attr, prev, nxt, share, access = rows
        # Cosines: from the search, then one retrieval for candidates and previous neighbours
        # (same scopes) that the search did not return.
        known = dict(dense)
        missing = [i for i in dict.fromkeys([*ids.tolist(), *prev[prev > 0].tolist()]) if i not in known]
        if missing:
            known.update(await self.store.index.cosines(missing, qvec))
        cos = _lookup(known, ids)
        prev_cos = np.where(prev > 0, _lookup(known, prev), 0.0)
        lex = _columns(lexical, ids)  # (n, 2): text score, text+context score
        raw = np.column_stack([lex[:, 0], lex[:, 1], cos, cos + W_PREV_DENSE * prev_cos])
        weights = np.array([0.0 if name in off else 1.0 for name in SIGNALS])
        fused = _minmax_columns(raw) @ weights
        # Neighbour smoothing (only neighbours that are themselves candidates contribute).
        smooth = fused.copy()
        if "neighbour" not in off:
            nb = np.maximum(_neighbour_scores(ids, prev, fused), _neighbour_scores(ids, nxt, fused))
            has = nb > -np.inf
            smooth[has] += W_NEIGHBOUR * nb[has]
        spread = float(smooth.max() - smooth.min()) or 1.0
        score = smooth + W_PRIOR * (importance + relevance)
        if self.w_access and "access" not in off:
            score += self.w_access * spread * access
        if entity_ids and "entity" not in off:
            score += W_ENTITY * spread * share
        keys = set(attributes)
        keyed_attr = np.fromiter((a is not None and a in keys for a in attr), dtype=bool, count=len(attr))
        score += W_ATTRIBUTE * spread * keyed_attr
        if history:
            score += W_HISTORY * spread * ~holds
        else:
            question = kind == "question"
            score -= W_STALE * spread * (~holds | question)
            if keys:
                score -= W_SUMMARY * spread * (holds & ~question & (kind == "summary"))
        order = np.lexsort((-ids, -score))[:k]  # best score first, ties: newest first
        top = ids[order].tolist()
        full = await self.store.engines.run_read(self._rows, top)
        dense_rank = {fid: r for r, fid in enumerate(dense_ids.tolist(), 1)}
        lexical_rank = {fid: r for r, fid in enumerate(lex_ids.tolist(), 1)}
        hits = []
        for j, fid in zip(order.tolist(), top, strict=True):
            if fid not in full:
                continue
            signals = {name: round(float(raw[j, c]), 4) for c, name in enumerate(SIGNALS) if raw[j, c]}
            if entity_ids and share[j] and "entity" not in off:
                signals["entity"] = round(float(share[j]), 3)
            if fid in dense_rank:
                signals["dense_rank"] = dense_rank[fid]
            if fid in lexical_rank:  # matched the query's words (bm25 may be ~0 in a tiny scope)
                signals["lexical_rank"] = lexical_rank[fid]
            if keyed_attr[j]:
                signals["attribute"] = 1.0
            hits.append(RecallHit(_fact(full[fid]), float(score[j]), signals, current=bool(holds[j])))
        return hits

    @staticmethod
    def _rows(conn, ids: list[int]) -> dict:
        """{id: full fact row} for the final hits (primary-key seeks)."""
        return {r.id: r for r in conn.execute(_rows_stmt(), {"ids": ids}).all()}

    async def dense(
        self, q: str, scopes: list[str], statuses: Sequence[str], n: int
    ) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """The query vector, shape (dim,), and up to `n` (fact id, cosine) from the vector index
        within `scopes`, best first."""
        qvec = await asyncio.to_thread(self.store.embedder.embed_query, q)
        if "dense_path" in self.off:
            return qvec, []
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
        return self._lexical_pg(conn, terms, scopes, statuses, n)

    def _lexical_pg(self, conn, terms: list[str], scopes: list[str], statuses: Sequence[str], n: int):
        """PostgreSQL full text (ts_rank over the generated `tsv`, GIN index `ix_facts_tsv`),
        planned by the size of the scopes so that it never ranks more than about LEXICAL_BUDGET
        rows' worth of work:
        - scopes with at most LEXICAL_BUDGET facts: the rows of the scopes (index seek on
          (scope_id, status)) filtered by the query; the tsvector is written `tsv || ''` so the
          planner cannot switch to the GIN index, whose posting lists span every scope;
        - larger scopes: the GIN index, the scope filter written `scope_id || ''` so that it is
          not walked over the whole scope instead. The rows matched are those of `_pg_match`
          (all rows with a rare term, or with all of the frequent terms; only rows with some but
          not all of the frequent terms and none of the rare ones are skipped), while every row
          returned is ranked by the plain OR of the terms, i.e. keeps its exact score.
        Returns [(fact id, text score, text+context score)], best first."""
        folded = list(dict.fromkeys(strip_accents(t) for t in terms))  # as the index (migration 0006)
        params = {"q": " | ".join(folded), "scopes": scopes, "st": list(statuses), "n": n}
        if self._large(conn, scopes, statuses):
            params["m"] = self._pg_match(conn, folded)
            stmt = _pg_lexical_stmt(True)
        else:
            stmt = _pg_lexical_stmt(False)
        return [(r.id, float(r.s1), float(r.s2)) for r in conn.execute(stmt, params).all()]

    def _pg_match(self, conn, terms: list[str]) -> str:
        """The tsquery of the rows `_lexical_pg` matches in a large scope (see there): document
        frequencies over the whole index, counted up to LEXICAL_BUDGET + 1 by the GIN index and
        cached for STATS_TTL_S (they only steer which rows are matched, never the scores)."""
        budget = self.LEXICAL_BUDGET
        count = _pg_df_stmt()
        df = {
            t: self._stat(("pgdf", t), lambda t=t: conn.execute(count, {"t": t, "cap": budget + 1}).scalar())
            for t in terms
        }
        if len(terms) == 1 or sum(df.values()) <= budget:
            return " | ".join(terms)
        rare: list[str] = []
        used = 0
        for t in sorted(terms, key=lambda t: df[t]):
            if used + df[t] > budget:
                break
            rare.append(t)
            used += df[t]
        frequent = [t for t in terms if t not in rare]
        all_frequent = " & ".join(frequent)
        if not rare:
            return all_frequent
        if len(frequent) == 1:  # "rare | frequent" would be the whole query: the rare rows only
            return " | ".join(rare)
        return f"{' | '.join(rare)} | ({all_frequent})"

    def _stat(self, key, fn):
        """A cached statistic (`fn()` recomputed after STATS_TTL_S); see `_tiers`."""
        now = time.monotonic()
        hit = self._stats.get(key)
        if hit is None or now - hit[1] > self.STATS_TTL_S:
            if len(self._stats) > 20_000:
                self._stats.clear()
            hit = self._stats[key] = (fn(), now)
        return hit[0]

    def _large(self, conn, scopes: list[str], statuses: Sequence[str]) -> bool:
        """Whether `scopes` hold more than LEXICAL_BUDGET facts of `statuses` (cached)."""
        budget = self.LEXICAL_BUDGET
        return self._stat(
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
        stmt = _fts_stmt()
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
        stat = self._stat
        large = self._large(conn, scopes, statuses)
        if not large:
            return [_any(terms)]
        count = _fts_count_stmt()
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
    def _hydrate(conn, ids, scopes, statuses, kinds, entity_ids, dialect: str, now: datetime):
        """The candidates' light columns as arrays of shape (n,), candidates re-checked against
        scopes/status/kinds, in database order; None if none is left:
        (ids int64, importance float, relevance float, holds bool (active and world-time valid
        at `now`), kind object, attr object, prev int64, next int64, share float, access float
        (the access prior of the module docstring, in [0, 1]).
        `prev`/`next` are the ids of the previous/next neighbour (same scope, same statuses,
        within NEIGHBOUR_GAP; 0 if none), `share` the share of `entity_ids` the fact is linked
        to. One statement for rows and neighbours, one for links."""
        params = {"ids": list(ids), "scopes": list(scopes), "statuses": list(statuses), "now": now}
        if kinds:
            params["kinds"] = list(kinds)
        rows = conn.execute(_hydrate_stmt(bool(kinds), dialect), params).all()
        if not rows:
            return None
        cols = list(zip(*rows, strict=True))
        fid = np.array(cols[0], dtype=np.int64)
        share = np.zeros(len(fid))
        if entity_ids:
            pos = {f: j for j, f in enumerate(cols[0])}
            for f, c in conn.execute(_links_stmt(), {"entities": list(entity_ids), "ids": list(cols[0])}).all():
                share[pos[f]] = c / len(entity_ids)
        return (
            fid,
            np.array(cols[1], dtype=float),
            np.array(cols[2], dtype=float),
            np.array(cols[3], dtype=bool),
            np.array(cols[4], dtype=object),
            np.array(cols[5], dtype=object),
            np.array([x or 0 for x in cols[6]], dtype=np.int64),
            np.array([x or 0 for x in cols[7]], dtype=np.int64),
            share,
            _access_prior(np.array(cols[8], dtype=float), np.array([x if x is not None else np.inf for x in cols[9]])),
        )


def _access_prior(count: np.ndarray, days: np.ndarray) -> np.ndarray:
    """min(1, log2(1 + count) / log2(1 + ACCESS_SATURATION)) * 0.5 ** (days / half-life), shape
    (n,); `days` since the last access (inf = never: 0)."""
    strength = np.minimum(1.0, np.log2(1.0 + np.maximum(count, 0.0)) / np.log2(1.0 + ACCESS_SATURATION))
    return strength * np.exp2(-np.maximum(days, 0.0) / ACCESS_HALF_LIFE_DAYS)


def _resolve(fut: asyncio.Future, value) -> None:
    """Set `fut`'s result unless it was cancelled meanwhile (called on the loop's thread)."""
    if not fut.done():
        fut.set_result(value)


def _lookup(values: dict[int, float], ids: np.ndarray) -> np.ndarray:
    """values[id] for each of `ids` (0.0 where absent), shape ids.shape."""
    return np.fromiter((values.get(i, 0.0) for i in ids.tolist()), dtype=float, count=len(ids))


def _columns(lexical: list[tuple[int, float, float]], ids: np.ndarray) -> np.ndarray:
    """The (text, text+context) full-text scores of each of `ids`, shape (len(ids), 2), 0 where
    the fact was not a full-text candidate."""
    out = np.zeros((len(ids), 2))
    if lexical:
        lex_ids = np.fromiter((r[0] for r in lexical), dtype=np.int64, count=len(lexical))
        scores = np.array([(r[1], r[2]) for r in lexical], dtype=float)
        order = np.argsort(lex_ids)
        at = np.searchsorted(lex_ids[order], ids).clip(max=len(lex_ids) - 1)
        found = lex_ids[order][at] == ids
        out[found] = scores[order][at[found]]
    return out


def _minmax_columns(raw: np.ndarray) -> np.ndarray:
    """Each column of `raw` (n, c) min-max normalised to [0, 1]; constant columns become 0."""
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = hi - lo
    return np.where(span > 0, (raw - lo) / np.where(span > 0, span, 1.0), 0.0)


def _neighbour_scores(ids: np.ndarray, nb: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """fused score of each row's neighbour `nb` (ids, 0 = none) when that neighbour is itself a
    row of `ids`, else -inf; shape (n,)."""
    order = np.argsort(ids)
    at = np.searchsorted(ids[order], nb).clip(max=len(ids) - 1)
    found = (nb > 0) & (ids[order][at] == nb)
    return np.where(found, fused[order][at], -np.inf)


@functools.cache
def _rows_stmt():
    """Full rows by id (parameter `ids`), built once."""
    return select(FactRow).where(FactRow.id.in_(bindparam("ids", expanding=True)))


@functools.cache
def _links_stmt():
    """(fact id, number of distinct linked entities) for facts `ids` and entities `entities`."""
    return (
        select(FactEntityRow.fact_id, func.count(FactEntityRow.entity_id.distinct()))
        .where(
            FactEntityRow.entity_id.in_(bindparam("entities", expanding=True)),
            FactEntityRow.fact_id.in_(bindparam("ids", expanding=True)),
        )
        .group_by(FactEntityRow.fact_id)
    )


@functools.cache
def _pg_lexical_stmt(large: bool):
    """PostgreSQL full-text statement of `Recaller._lexical_pg`, built once: parameters `q` (the
    ranking tsquery), `scopes`, `st`, `n` and, `large`, `m` (the matching tsquery)."""
    if large:
        where = "tsv @@ to_tsquery('english', :m) AND scope_id || '' IN :scopes AND status || '' IN :st"
    else:
        where = "(tsv || ''::tsvector) @@ q AND scope_id IN :scopes AND status IN :st"
    return text(
        "SELECT id, ts_rank('{0, 0, 0, 1}', tsv, q, 1) AS s1, ts_rank('{0, 0, 1, 1}', tsv, q, 1) AS s2 "
        f"FROM {tname('facts')}, to_tsquery('english', :q) q WHERE {where} ORDER BY s2 DESC LIMIT :n"
    ).bindparams(bindparam("scopes", expanding=True), bindparam("st", expanding=True))


@functools.cache
def _pg_df_stmt():
    """Rows of the whole index holding tsquery term `t`, counted up to `cap` (GIN index)."""
    return text(
        f"SELECT count(*) FROM (SELECT 1 FROM {tname('facts')} WHERE tsv @@ to_tsquery('english', :t) LIMIT :cap) x"
    )


@functools.cache
def _fts_stmt():
    """SQLite FTS5 candidates of `Recaller._lexical_sqlite`: parameters `m` (the MATCH) and `n`."""
    fts = tname("facts_fts")
    return text(
        f"SELECT rowid AS id, -bm25({fts}, 1.0, 0.0, 0.0, 0.0) AS s1, -bm25({fts}, 1.0, 1.0, 0.0, 0.0) AS s2 "
        f"FROM {fts} WHERE {fts} MATCH :m ORDER BY s2 DESC LIMIT :n"
    )


@functools.cache
def _fts_count_stmt():
    """Rows of the FTS5 index matching `m`, counted up to `cap`."""
    fts = tname("facts_fts")
    return text(f"SELECT count(*) FROM (SELECT 1 FROM {fts} WHERE {fts} MATCH :m LIMIT :cap)")


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


def _close(dialect: str, a, b):
    """SQL: timestamps `a` and `b` both known and at most NEIGHBOUR_GAP apart."""
    gap = NEIGHBOUR_GAP.total_seconds()
    if dialect == "sqlite":
        seconds = func.abs(func.julianday(a) - func.julianday(b)) * 86400.0
        return a.is_not(None) & b.is_not(None) & (seconds <= gap + 1e-3)  # (julianday: ~10 us steps)
    return a.is_not(None) & b.is_not(None) & (func.abs(extract("epoch", a - b)) <= gap)


def _days_since(dialect: str, then, now):
    """Days from `then` to `now` in SQL (NULL when `then` is NULL)."""
    if dialect == "sqlite":
        return func.julianday(now) - func.julianday(then)
    return extract("epoch", now - then) / 86400.0


@functools.cache
def _hydrate_stmt(with_kinds: bool, dialect: str = "sqlite"):
    """The statement of `Recaller._hydrate`, built once per dialect (building it costs more than
    running it): parameters `ids`, `scopes`, `statuses`, `now` and, `with_kinds`, `kinds`.
    Columns: id, importance, relevance, holds, kind, attr, prev_id, next_id (neighbour ids only
    when within NEIGHBOUR_GAP, else NULL), access_count, access_days (days since the last access)
    — computed in SQL so no timestamp reaches Python.

    Neighbours come from the stored `prev_id` (migration 0004): the previous fact is a primary-key
    seek, the next one (the first fact whose prev_id is this one) an index seek on prev_id — on
    both dialects, whatever the size of the scope or how its facts interleave with others'."""
    statuses = bindparam("statuses", expanding=True)
    pv, xv = aliased(FactRow), aliased(FactRow)
    # ORDER BY id + 0: the 1-2 rows of the prev_id seek are sorted, rather than letting a planner
    # without fresh statistics walk the primary key in id order looking for prev_id matches.
    nv = aliased(FactRow)
    if dialect == "sqlite":
        # SQLite's prev_id index ends with the rowid: the first next fact is the first entry of
        # the seek (no sort), for its id and for its timestamp.
        next_id = (
            select(func.min(xv.id))
            .where(xv.prev_id == FactRow.id, xv.status.in_(statuses))
            .correlate(FactRow)
            .scalar_subquery()
        )
        next_at = (
            select(nv.valid_from)
            .where(nv.prev_id == FactRow.id, nv.status.in_(statuses))
            .order_by(nv.id)
            .limit(1)
            .correlate(FactRow)
            .scalar_subquery()
        )
        nx = None
    else:
        # One LATERAL seek on prev_id gives the next fact's id and timestamp.
        nx = (
            select(xv.id.label("id"), xv.valid_from.label("valid_from"))
            .where(xv.prev_id == FactRow.id, xv.status.in_(statuses))
            .order_by(xv.id + 0)
            .limit(1)
            .correlate(FactRow)
            .lateral("nx")
        )
        next_id, next_at = nx.c.id, nx.c.valid_from
    at = func.coalesce(FactRow.valid_from, FactRow.created_at)
    now = bindparam("now", type_=FactRow.valid_to.type)
    holds = (FactRow.status == "active") & (FactRow.valid_to.is_(None) | (FactRow.valid_to > now))
    q = (
        select(
            FactRow.id,
            FactRow.importance,
            FactRow.relevance,
            case((holds, 1), else_=0).label("holds"),
            FactRow.kind,
            FactRow.attr,
            case((_close(dialect, at, pv.valid_from), pv.id)).label("prev_id"),
            case((_close(dialect, at, next_at), next_id)).label("next_id"),
            FactRow.access_count,
            _days_since(dialect, FactRow.last_accessed_at, now).label("access_days"),
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
    if nx is not None:
        q = q.outerjoin(nx, true())
    if with_kinds:
        q = q.where(FactRow.kind.in_(bindparam("kinds", expanding=True)))
    return q


def _naive(d):
    """A naive UTC datetime from the driver's value (SQLite stores naive UTC, PostgreSQL returns
    aware values in the session's zone)."""
    if isinstance(d, str):  # SQLite returns scalar-subquery datetimes as text
        d = datetime.fromisoformat(d)
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo else d
