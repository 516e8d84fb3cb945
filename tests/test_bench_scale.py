"""`clara bench scale` smoke runs at a tiny size: on SQLite, and on PostgreSQL when
CLARA_TEST_DATABASE_URL is set (the bench creates its own private database and drops it).
Latencies are not asserted (benchmarks, not timed tests); the figures and plans are."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import make_url

from clara.bench import scale

PG_URL = os.environ.get("CLARA_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _databases(url: str) -> set[str]:
    import psycopg

    admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_scale_bench_smoke(backend):
    url = PG_URL if backend == "postgresql" else None
    before = _databases(url) if url else set()
    res = await scale.run([300], queries=5, adds=5, database_url=url, synthetic=True, explain=True)
    figures = res["300"]
    assert figures["facts"] == 300
    for key in ("add_ack_p50_ms", "add_ack_p95_ms", "recall_p50_ms", "recall_p95_ms", "recall_scoped_p95_ms"):
        assert figures[key] > 0, key
    plans = res["explain 300"]["text"]
    assert "FROM facts" in plans and ("facts_fts" in plans or "tsv" in plans)  # full text and hydration
    if url:
        assert "Execution Time" in plans  # EXPLAIN (ANALYZE, BUFFERS)
        assert _databases(url) == before  # the private database is gone


def test_synthetic_embedder_is_unit_length_and_word_sensitive():
    emb = scale.SyntheticEmbedder()
    a, b, c = emb.embed_documents(["Anna cooked a sourdough loaf", "a sourdough loaf by Anna", "the tax return"])
    assert abs(float(a @ a) - 1) < 1e-5
    assert float(a @ b) > float(a @ c)
    assert emb.embed_query("Anna cooked") @ a > 0.3
