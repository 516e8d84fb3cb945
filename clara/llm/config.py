"""Language-model settings (environment / ``.env``, the seed bot's variable names) and `make_llm`.

``LLM_PROVIDER`` picks the provider: ``openrouter``, ``nanogpt``, ``openai`` (any OpenAI-compatible
endpoint through ``CUSTOM_OPENAI_*``), ``anthropic`` or ``ollama``. Unset or ``none`` means
memory-only mode: `make_llm` returns None, as it does when the chosen provider's API key is missing
(Ollama needs none).

Each provider has a base model (``<P>_MODEL``) and optional tier models (``<P>_MODEL_HIGH``,
``_MID``, ``_LOW``); ``MODEL_TIER`` is the default tier. Empty variables count as unset.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clara.llm.base import LLMProvider

log = logging.getLogger("clara.llm")

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
NANOGPT_BASE_URL = "https://nano-gpt.com/api/v1"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OLLAMA_BASE_URL = "http://127.0.0.1:11434/v1"

ProviderName = Literal["openrouter", "nanogpt", "openai", "anthropic", "ollama"]


class LLMSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    llm_provider: ProviderName | None = Field(default=None, description="unset/none = memory-only mode")

    openrouter_api_key: str | None = None
    openrouter_model: str = "anthropic/claude-sonnet-4"
    openrouter_model_high: str | None = None
    openrouter_model_mid: str | None = None
    openrouter_model_low: str | None = None
    openrouter_site: str | None = Field(default=None, description="sent as HTTP-Referer")
    openrouter_title: str | None = Field(default="Clara", description="sent as X-Title")

    nanogpt_api_key: str | None = None
    nanogpt_model: str = "moonshotai/Kimi-K2-Instruct"
    nanogpt_model_high: str | None = None
    nanogpt_model_mid: str | None = None
    nanogpt_model_low: str | None = None

    custom_openai_api_key: str | None = None
    custom_openai_base_url: str = OPENAI_BASE_URL
    custom_openai_model: str = "gpt-4o"
    custom_openai_model_high: str | None = None
    custom_openai_model_mid: str | None = None
    custom_openai_model_low: str | None = None

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-sonnet-4-5"
    anthropic_model_high: str | None = None
    anthropic_model_mid: str | None = None
    anthropic_model_low: str | None = None

    ollama_base_url: str = OLLAMA_BASE_URL
    ollama_model: str = "llama3.1"

    model_tier: Literal["high", "mid", "low"] | None = None
    auto_tier_selection: bool = False
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_tool_max_steps: int = Field(default=5, ge=1, le=50)

    @field_validator("llm_provider", "model_tier", mode="before")
    @classmethod
    def _lower_or_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return None if value in ("", "none", "off") else value
        return value

    def tier_models(self, prefix: str) -> dict[str, str | None]:
        return {tier: getattr(self, f"{prefix}_model_{tier}", None) for tier in ("high", "mid", "low")}


def make_llm(settings: LLMSettings | None = None) -> LLMProvider | None:
    """The configured provider, or None for memory-only mode (no provider, or its key missing)."""
    s = settings or LLMSettings()
    if s.llm_provider is None:
        return None  # before importing the SDKs: memory-only start-up stays fast (anthropic alone ~1 s)
    from clara.llm.anthropic_native import AnthropicProvider
    from clara.llm.openai_compat import OpenAICompatProvider

    common = {
        "default_tier": s.model_tier,
        "timeout": s.llm_timeout_seconds,
        "max_retries": s.llm_max_retries,
    }
    provider = s.llm_provider
    if provider is None:
        return None
    if provider == "ollama":
        return OpenAICompatProvider(
            name="ollama", base_url=s.ollama_base_url, api_key="ollama", model=s.ollama_model, **common
        )
    key = {
        "openrouter": s.openrouter_api_key,
        "nanogpt": s.nanogpt_api_key,
        "openai": s.custom_openai_api_key,
        "anthropic": s.anthropic_api_key,
    }[provider]
    if not key:
        log.warning("LLM_PROVIDER=%s but its API key is not set: running memory-only", provider)
        return None
    if provider == "anthropic":
        return AnthropicProvider(
            api_key=key,
            base_url=s.anthropic_base_url,
            model=s.anthropic_model,
            tier_models=s.tier_models("anthropic"),
            **common,
        )
    if provider == "openrouter":
        return OpenAICompatProvider(
            name="openrouter",
            base_url=OPENROUTER_BASE_URL,
            api_key=key,
            model=s.openrouter_model,
            tier_models=s.tier_models("openrouter"),
            default_headers={"HTTP-Referer": s.openrouter_site or "", "X-Title": s.openrouter_title or ""},
            **common,
        )
    if provider == "nanogpt":
        return OpenAICompatProvider(
            name="nanogpt",
            base_url=NANOGPT_BASE_URL,
            api_key=key,
            model=s.nanogpt_model,
            tier_models=s.tier_models("nanogpt"),
            **common,
        )
    base_url = s.custom_openai_base_url.rstrip("/")
    return OpenAICompatProvider(
        name="openai",
        base_url=base_url,
        api_key=key,
        model=s.custom_openai_model,
        tier_models=s.tier_models("custom_openai"),
        # api.openai.com's newer models reject max_tokens; compatible servers expect it
        token_param="max_completion_tokens" if base_url == OPENAI_BASE_URL else "max_tokens",
        **common,
    )
