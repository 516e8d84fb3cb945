"""`AnthropicProvider`: Anthropic's Messages API through the official `anthropic` `AsyncAnthropic`
client (any compatible endpoint via `base_url`).

Conversion from the neutral types: system messages are lifted into ``system=``, tool results
become ``tool_result`` blocks in a user turn, assistant tool calls ``tool_use`` blocks, and
consecutive same-role turns are merged (the API wants user/assistant alternation). Streaming uses
the SDK's raw event stream (``stream=True``): text deltas are passed on as they come, ``tool_use``
blocks are assembled from their ``input_json_delta`` parts. Retries and error mapping as in
`OpenAICompatProvider` (the SDK's own retries are off).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic

from clara.llm.base import (
    ChatMessage,
    Completion,
    LLMBadOutput,
    LLMError,
    LLMProvider,
    RetryPolicy,
    StreamEvent,
    ToolCall,
    ToolSpec,
    empty_usage,
    make_usage,
    map_sdk_error,
    parse_tool_arguments,
    strip_json_fence,
)

JSON_INSTRUCTION = "Answer with a single JSON object only: no prose, no Markdown code fence."


class AnthropicProvider(LLMProvider):
    """Claude models over the Anthropic Messages API.

    `base_url` is the API root without ``/v1`` (``None`` = the SDK default / ``ANTHROPIC_BASE_URL``);
    `timeout` is the default per-attempt timeout in seconds.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        name: str = "anthropic",
        tier_models: Mapping[str, str | None] | None = None,
        default_tier: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        default_headers: Mapping[str, str] | None = None,
    ):
        super().__init__(model, tier_models=tier_models, default_tier=default_tier)
        self.name = name
        self.base_url = base_url
        self.timeout = float(timeout)
        self.retry = RetryPolicy(max_retries=max_retries, backoff=retry_backoff)
        self._secret = api_key
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url or None,
            timeout=self.timeout,
            max_retries=0,
            default_headers=dict(default_headers) if default_headers else None,
        )

    def _params(
        self,
        messages: list[ChatMessage],
        tier: str | None,
        tools: list[ToolSpec] | None,
        max_tokens: int,
        json_mode: bool = False,
    ) -> dict[str, Any]:
        system, wire = to_anthropic_messages(messages)
        if json_mode:
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        params: dict[str, Any] = {"model": self.select_model(tier, tools), "messages": wire, "max_tokens": max_tokens}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = [to_anthropic_tool(t) for t in tools]
        return params

    def _map_error(self, exc: BaseException) -> LLMError:
        return map_sdk_error(exc, anthropic, self.name, self._secret, _anthropic_detail)

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        tier: str | None = None,
        tools: list[ToolSpec] | None = None,
        max_tokens: int = 1024,
        json_mode: bool = False,
        timeout: float | None = None,
    ) -> Completion:
        params = self._params(messages, tier, tools, max_tokens, json_mode)
        limit = timeout or self.timeout

        async def attempt() -> Any:
            try:
                async with asyncio.timeout(limit):
                    return await self.client.messages.create(**params, timeout=limit)
            except Exception as exc:
                raise self._map_error(exc) from exc

        response = await self.retry.run(attempt)
        texts, calls = [], []
        for block in getattr(response, "content", None) or []:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                if not isinstance(block.input, dict):
                    raise LLMBadOutput(
                        f"{self.name} sent invalid arguments for tool '{block.name}'.", provider=self.name
                    )
                calls.append(ToolCall(id=block.id, name=block.name, arguments=block.input))
        if getattr(response, "content", None) is None:
            raise LLMBadOutput(f"{self.name} returned no answer.", provider=self.name)
        usage = getattr(response, "usage", None)
        text = "".join(texts)
        return Completion(
            text=strip_json_fence(text) if json_mode else text,
            tool_calls=calls,
            model=getattr(response, "model", None) or params["model"],
            usage=make_usage(usage.input_tokens, usage.output_tokens) if usage else empty_usage(),
        )

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        tier: str | None = None,
        tools: list[ToolSpec] | None = None,
        max_tokens: int = 1024,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        params = self._params(messages, tier, tools, max_tokens)
        limit = timeout or self.timeout

        async def open_stream() -> tuple[Any, Any, Any]:
            sdk_stream = None
            try:
                async with asyncio.timeout(limit):
                    sdk_stream = await self.client.messages.create(**params, stream=True, timeout=limit)
                    events = sdk_stream.__aiter__()
                    first = await anext(events, None)
                return sdk_stream, events, first
            except BaseException as exc:
                if sdk_stream is not None:
                    await sdk_stream.close()
                if isinstance(exc, Exception):
                    raise self._map_error(exc) from exc
                raise

        sdk_stream, events, event = await self.retry.run(open_stream)
        if event is None:
            await sdk_stream.close()
            raise LLMBadOutput(f"{self.name} returned an empty stream.", provider=self.name)
        blocks: dict[int, _ToolBlock] = {}
        input_tokens = output_tokens = 0
        try:
            while event is not None:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    usage = getattr(event.message, "usage", None)
                    if usage is not None:
                        input_tokens = usage.input_tokens or 0
                        output_tokens = usage.output_tokens or 0
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        blocks[event.index] = _ToolBlock(block.id, block.name, initial=block.input)
                    elif block.type == "text" and block.text:
                        yield StreamEvent("text", text=block.text)
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        yield StreamEvent("text", text=delta.text)
                    elif delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index].parts.append(delta.partial_json or "")
                elif kind == "message_delta":
                    usage = getattr(event, "usage", None)
                    if usage is not None:
                        output_tokens = usage.output_tokens or output_tokens
                        input_tokens = getattr(usage, "input_tokens", None) or input_tokens
                try:
                    event = await anext(events, None)
                except Exception as exc:
                    raise self._map_error(exc) from exc
            for _, block in sorted(blocks.items()):
                yield StreamEvent("tool_call", tool_call=block.finish(self.name))
            yield StreamEvent("done", usage=make_usage(input_tokens, output_tokens))
        finally:
            await sdk_stream.close()

    async def aclose(self) -> None:
        await self.client.close()


@dataclass
class _ToolBlock:
    id: str
    name: str
    initial: Any = None
    parts: list[str] = field(default_factory=list)

    def finish(self, provider: str) -> ToolCall:
        raw = "".join(self.parts)
        arguments = parse_tool_arguments(raw if raw.strip() else (self.initial or {}), self.name, provider)
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


# ---------------------------------------------------------------------------------------------
# Wire conversion

_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(call_id: str | None) -> str:
    return _ID_CHARS.sub("_", call_id or "") or "toolu_missing"


def to_anthropic_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, Messages API turns) for neutral messages; consecutive same-role turns are
    merged and empty ones dropped."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.content:
                system.append(message.content)
            continue
        if message.role == "tool":
            role = "user"
            blocks = [
                {"type": "tool_result", "tool_use_id": _tool_id(message.tool_call_id), "content": message.content}
            ]
        else:
            role = message.role
            blocks = [{"type": "text", "text": message.content}] if message.content else []
            if message.role == "assistant":
                blocks += [
                    {"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": c.arguments}
                    for c in message.tool_calls
                ]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results must come first in their user turn
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]
    return "\n\n".join(system), turns


def to_anthropic_tool(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


def _anthropic_detail(exc: Any) -> str | None:
    return exc.api_message if isinstance(getattr(exc, "api_message", None), str) else None
