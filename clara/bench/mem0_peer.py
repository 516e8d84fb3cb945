"""mem0 as a peer in `clara bench locomo` (optional extra: `pip install -e '.[mem0]'`).

mem0 runs with `infer=False` (each turn stored verbatim, no LLM), on its embedded Qdrant (`path`
mode), and embeds with the very same model as Clara: a small OpenAI-compatible `/v1/embeddings`
server on 127.0.0.1 answers with Clara's local MiniLM, so both systems see identical vectors.
Telemetry is switched off before mem0 is imported (it hangs without network; NOTES.md §4).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from clara.bench.embed_server import serve_embeddings
from storage.embeddings import make_embedder

os.environ.setdefault("MEM0_TELEMETRY", "False")
import mem0  # noqa: E402  (must follow the telemetry switch; ImportError = extra not installed)


async def run_mem0(convs, result, progress, n_questions: int, evidence) -> None:
    embedder = make_embedder("local")
    server, base_url = serve_embeddings(embedder)
    try:
        with tempfile.TemporaryDirectory(prefix="clara-mem0-") as tmp:
            config = {
                "vector_store": {
                    "provider": "qdrant",
                    "config": {"collection_name": "locomo", "path": f"{tmp}/qdrant", "embedding_model_dims": 384},
                },
                "embedder": {
                    "provider": "openai",
                    "config": {
                        "model": "minilm",
                        "api_key": "local",
                        "openai_base_url": base_url,
                        "embedding_dims": 384,
                    },
                },
                "llm": {
                    "provider": "openai",
                    "config": {"model": "unused", "api_key": "local", "openai_base_url": base_url},
                },
                "history_db_path": f"{tmp}/history.db",
            }
            memory = await asyncio.to_thread(mem0.Memory.from_config, config)
            await asyncio.to_thread(_ingest, memory, convs, result)
            done = 0
            for conv in convs:
                for q in conv.scored_questions():
                    t = time.perf_counter()
                    found = await asyncio.to_thread(
                        memory.search, q.question, top_k=25, filters={"user_id": conv.id}, threshold=0.0
                    )
                    ms = (time.perf_counter() - t) * 1000
                    ranked = [r.get("metadata", {}).get("dia_id") for r in found.get("results", [])]
                    result.add(ranked, evidence(q), ms)
                    done += 1
                    if progress and done % 20 == 0:
                        progress("mem0", done, n_questions)
    finally:
        server.shutdown()


def _ingest(memory, convs, result) -> None:
    t0 = time.perf_counter()
    for conv in convs:
        for turn in conv.turns:
            memory.add(turn.content, user_id=conv.id, metadata={"dia_id": turn.dia_id}, infer=False)
            result.ingest_turns += 1
    result.ingest_s = time.perf_counter() - t0
