"""Clara's language-model layer: provider-neutral types, the OpenAI-compatible and Anthropic
providers, the tool loop, and settings (`make_llm`).

The provider classes are imported lazily (the ``anthropic`` SDK alone takes about a second to
import), so ``from clara.llm import ChatMessage`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clara.llm.base import (
    ChatMessage,
    Completion,
    LLMBadOutput,
    LLMError,
    LLMProvider,
    LLMTimeout,
    LLMUnavailable,
    RetryPolicy,
    StreamEvent,
    ToolCall,
    ToolSpec,
)
from clara.llm.config import LLMSettings, make_llm
from clara.llm.tools import Tool, ToolLoopResult, execute_tool_call, run_tool_loop, validate_arguments

if TYPE_CHECKING:
    from clara.llm.anthropic_native import AnthropicProvider
    from clara.llm.openai_compat import OpenAICompatProvider

__all__ = [
    "AnthropicProvider",
    "ChatMessage",
    "Completion",
    "LLMBadOutput",
    "LLMError",
    "LLMProvider",
    "LLMSettings",
    "LLMTimeout",
    "LLMUnavailable",
    "OpenAICompatProvider",
    "RetryPolicy",
    "StreamEvent",
    "Tool",
    "ToolCall",
    "ToolLoopResult",
    "ToolSpec",
    "execute_tool_call",
    "make_llm",
    "run_tool_loop",
    "validate_arguments",
]


def __getattr__(name: str) -> Any:
    if name == "OpenAICompatProvider":
        from clara.llm.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider
    if name == "AnthropicProvider":
        from clara.llm.anthropic_native import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module 'clara.llm' has no attribute {name!r}")
