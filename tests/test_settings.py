"""Settings come from the environment and `.env`, and reach the store's configuration."""

from __future__ import annotations

from pathlib import Path

from clara.settings import Settings
from storage.db import async_url


def test_env_and_dotenv_reach_store_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("QDRANT_URL=http://qdrant:6333\nEMBED_THREADS=2\nOPENAI_API_KEY=sk-test\n")
    monkeypatch.setenv("CLARA_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/clara")
    cfg = Settings().store_config()
    assert cfg.data_dir == tmp_path / "d"
    assert cfg.qdrant_url == "http://qdrant:6333" and cfg.embed_threads == 2 and cfg.openai_api_key == "sk-test"
    assert async_url(cfg.database_url, cfg.data_dir) == "postgresql+psycopg://u:p@db:5432/clara"


def test_defaults_are_the_embedded_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CLARA_DATA_DIR", "DATABASE_URL", "QDRANT_URL", "EMBEDDING_PROVIDER"):
        monkeypatch.delenv(var, raising=False)
    cfg = Settings().store_config()
    assert cfg.data_dir == Path("data") and cfg.qdrant_url is None and cfg.embedding_provider == "local"
    assert async_url(cfg.database_url, cfg.data_dir).startswith("sqlite+aiosqlite:///")
