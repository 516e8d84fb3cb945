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


def test_mcp_http_setting_parses_host_and_port_and_hides_tokens(tmp_path, monkeypatch):
    import pytest
    from pydantic import ValidationError

    from clara.http_serve import parse_listen
    from clara.mcp_server.server import http_config_from_settings

    monkeypatch.chdir(tmp_path)
    assert parse_listen("8765") == ("127.0.0.1", 8765)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8765") == ("::1", 8765)
    for bad in ("", "host:", "::1:80", "a b:80", "h:70000", "h:-1"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    token = "tok-agent-0123456789abcdef"
    monkeypatch.setenv("CLARA_MCP_HTTP", "localhost:8800")
    monkeypatch.setenv("CLARA_MCP_TOKENS", f"{token}=coder")
    monkeypatch.setenv("CLARA_MCP_GRANTS", "coder=channel:1, coder=guild:2")
    settings = Settings()
    assert settings.mcp_http == "localhost:8800" and token not in repr(settings)
    config = http_config_from_settings(settings, grants=["coder=project:x"])
    assert (config.host, config.port, config.tokens) == ("localhost", 8800, {token: "coder"})
    assert config.grants == {"coder": ["channel:1", "guild:2", "project:x"]} and token not in repr(config)
    assert http_config_from_settings(settings, listen="9001").port == 9001
    monkeypatch.delenv("CLARA_MCP_HTTP")
    assert http_config_from_settings(Settings()) is None  # unset: the bot serves no MCP
    monkeypatch.setenv("CLARA_MCP_HTTP", "nope:port")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValueError, match="item 1"):
        http_config_from_settings(settings, grants=["coder"])
