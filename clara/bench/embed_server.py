"""A minimal OpenAI- and Cohere-compatible embeddings endpoint on 127.0.0.1, answering with a
local `Embedder`. Used to give peers (mem0) the very same vectors as Clara, and by the tests to
exercise the real `openai` and `cohere` clients against a real HTTP peer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from storage.embeddings import Embedder


def serve_embeddings(embedder: Embedder) -> tuple[ThreadingHTTPServer, str]:
    """Start an OpenAI-compatible embeddings endpoint on 127.0.0.1; returns (server, base URL)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/").endswith("/embed"):  # Cohere v2
                texts = body.get("texts", [])
                vecs = embedder.embed_documents(texts)
                payload = {
                    "id": "local",
                    "embeddings": {"float": [v.tolist() for v in vecs]},
                    "texts": texts,
                    "response_type": "embeddings_by_type",
                    "meta": {"api_version": {"version": "2"}},
                }
            else:  # OpenAI /v1/embeddings
                texts = body.get("input", [])
                texts = [texts] if isinstance(texts, str) else texts
                vecs = embedder.embed_documents(texts) if len(texts) > 1 else [embedder.embed_query(texts[0])]
                payload = {
                    "object": "list",
                    "model": body.get("model", "minilm"),
                    "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                }
            raw = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
