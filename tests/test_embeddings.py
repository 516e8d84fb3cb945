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
