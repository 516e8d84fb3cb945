"""Tools the model can call, and the loop that runs them.

`run_tool_loop` streams one model step at a time, forwards text deltas to `on_text`, executes the
tool calls of the step, appends the assistant message and one tool message per call, and repeats
until the model answers without calling a tool or `max_steps` model calls were made.

Tool failures are never exceptions for the caller: an unknown tool, arguments that do not match
the tool's JSON schema, or a handler that raises all become an ``"Error: ..."`` result the model
reads (a raising handler is also logged). Argument validation uses a small built-in JSON-schema
subset (type, required, properties, additionalProperties, items, enum, const, minimum/maximum,
minLength/maxLength, minItems/maxItems); schema keywords outside it are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from clara.llm.base import ChatMessage, LLMProvider, LLMTimeout, ToolCall, ToolSpec, empty_usage

log = logging.getLogger("clara.llm.tools")

MAX_RESULT_CHARS = 20_000
STEP_SEPARATOR = "\n\n"


@dataclass
class Tool:
    """A callable tool: its `spec` (what the model sees) and an async `handler` that receives the
    validated argument dict and returns the result text."""

    spec: ToolSpec
    handler: Callable[[dict[str, Any]], Awaitable[str]]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class ToolLoopResult:
    """What a tool loop produced.

    - `text`: the answer text of every step joined by a blank line (exactly what `on_text` got),
      plus a note when the step limit stopped the loop;
    - `steps`: model calls made;
    - `tool_calls`: every executed call with the result text the model saw;
    - `messages`: the conversation including the new assistant and tool messages;
    - `usage`: token counts summed over all steps;
    - `stopped`: True when `max_steps` was reached before a final answer.
    """

    text: str
    steps: int
    tool_calls: list[tuple[ToolCall, str]] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=empty_usage)
    stopped: bool = False


def validate_arguments(schema: dict[str, Any], value: Any, path: str = "arguments") -> list[str]:
    """The ways `value` breaks `schema` (empty when it conforms), as short readable strings."""
    errors: list[str] = []
    if not isinstance(schema, dict):
        return errors
    expected = schema.get("type")
    if expected is not None:
        types = expected if isinstance(expected, list) else [expected]
        if not any(_is_type(value, t) for t in types):
            return [f"{path} must be of type {' or '.join(map(str, types))}, got {_type_name(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path} must be one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path} must be {schema['const']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path} must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path} must be <= {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path} must have at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}.{name} is required")
        for name, item in value.items():
            if name in properties:
                errors += validate_arguments(properties[name], item, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{name} is not an allowed property")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate_arguments(schema["additionalProperties"], item, f"{path}.{name}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path} must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path} must have at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += validate_arguments(schema["items"], item, f"{path}[{i}]")
    return errors


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (
            isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    checks: dict[str, Any] = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
    return isinstance(value, checks[name]) if name in checks else True


def _type_name(value: Any) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


async def execute_tool_call(call: ToolCall, tools: dict[str, Tool]) -> str:
    """Run one call and return the result text the model will read (errors included)."""
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return f"Error: unknown tool '{call.name}'. Available tools: {available}."
    problems = validate_arguments(tool.spec.parameters, call.arguments)
    if problems:
        return f"Error: invalid arguments for tool '{call.name}': " + "; ".join(problems[:5])
    try:
        result = await tool.handler(call.arguments)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("tool %s failed", call.name)
        return f"Error: tool '{call.name}' failed: {type(exc).__name__}: {str(exc)[:300]}"
    result = result if isinstance(result, str) else str(result)
    if len(result) > MAX_RESULT_CHARS:
        result = result[:MAX_RESULT_CHARS] + "\n[... truncated]"
    return result


async def run_tool_loop(
    provider: LLMProvider,
    messages: list[ChatMessage],
    tools: list[Tool],
    *,
    tier: str | None = None,
    max_steps: int = 5,
    timeout: float = 60,
    on_text: Callable[[str], Awaitable[None]] | None = None,
    max_tokens: int = 1024,
    on_tool: Callable[[ToolCall, str, float], Awaitable[None]] | None = None,
) -> ToolLoopResult:
    """Let the model answer `messages`, calling `tools` as it asks, for at most `max_steps` model
    calls and `timeout` seconds overall.

    `on_tool(call, result, seconds)` is awaited after every call (unknown tools and invalid
    arguments included; the result text says "Error: …" then).
    Returns a `ToolLoopResult` (see its doc); the input list is not modified. Raises `LLMTimeout`
    when the whole loop exceeds `timeout`, and the provider's `LLMError`s otherwise.
    """
    by_name = {tool.name: tool for tool in tools}
    specs = [tool.spec for tool in tools] or None
    conversation = list(messages)
    executed: list[tuple[ToolCall, str]] = []
    texts: list[str] = []
    usage = empty_usage()
    steps = 0

    async def emit(delta: str) -> None:
        if on_text is not None and delta:
            await on_text(delta)

    try:
        async with asyncio.timeout(timeout):
            while steps < max_steps:
                steps += 1
                step_text: list[str] = []
                calls: list[ToolCall] = []
                async with aclosing(
                    provider.stream(conversation, tier=tier, tools=specs, max_tokens=max_tokens)
                ) as events:
                    async for event in events:
                        if event.kind == "text" and event.text:
                            if not step_text and texts:
                                await emit(STEP_SEPARATOR)
                            step_text.append(event.text)
                            await emit(event.text)
                        elif event.kind == "tool_call" and event.tool_call is not None:
                            calls.append(event.tool_call)
                        elif event.kind == "done" and event.usage:
                            for key in usage:
                                usage[key] += event.usage.get(key, 0)
                text = "".join(step_text)
                if text:
                    texts.append(text)
                conversation.append(ChatMessage.assistant(text, calls))
                if not calls:
                    return ToolLoopResult(STEP_SEPARATOR.join(texts), steps, executed, conversation, usage)
                for call in calls:
                    started = time.monotonic()
                    result = await execute_tool_call(call, by_name)
                    if on_tool is not None:  # e.g. the chat's tool_execution records
                        await on_tool(call, result, time.monotonic() - started)
                    executed.append((call, result))
                    conversation.append(ChatMessage.tool(call, result))
    except TimeoutError as exc:
        raise LLMTimeout(f"The model and its tools took longer than {timeout:g} s.", provider=provider.name) from exc
    note = f"[Stopped after {max_steps} steps without a final answer.]"
    await emit((STEP_SEPARATOR if texts else "") + note)
    return ToolLoopResult(STEP_SEPARATOR.join([*texts, note]), steps, executed, conversation, usage, stopped=True)
