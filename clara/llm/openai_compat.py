"""`OpenAICompatProvider`: any OpenAI-compatible chat-completions API (OpenRouter, NanoGPT, OpenAI,
Ollama, vLLM, ...) through the official `openai` `AsyncOpenAI` client.

The SDK's own retries are off (``max_retries=0``); `RetryPolicy` retries timeouts, connection
errors, 429 and 5xx with backoff, and a stream is never retried once its first chunk has arrived.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from clara.llm.base import (
    ChatMessage,
    Completion,
    LLMBadOutput,
    LLMError,
    LLMProvider,
    LLMUnavailable,
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


class OpenAICompatProvider(LLMProvider):
    """Chat completions over an OpenAI-compatible HTTP API.

    `base_url` is the API root ending in ``/v1`` (e.g. ``https://openrouter.ai/api/v1``); `timeout`
    is the default per-attempt timeout in seconds; `default_headers` go with every request (e.g.
    OpenRouter's ``HTTP-Referer``/``X-Title``); `token_param` is the name of the output-token limit
    (``max_tokens``, or ``max_completion_tokens`` for api.openai.com's newer models).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        name: str = "openai",
        tier_models: Mapping[str, str | None] | None = None,
        default_tier: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        default_headers: Mapping[str, str] | None = None,
        token_param: str = "max_tokens",
    ):
        super().__init__(model, tier_models=tier_models, default_tier=default_tier)
        self.name = name
        self.base_url = base_url
        self.timeout = float(timeout)
        self.retry = RetryPolicy(max_retries=max_retries, backoff=retry_backoff)
        self.token_param = token_param
        self._secret = api_key
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,
            default_headers={k: v for k, v in (default_headers or {}).items() if v} or None,
        )

    # ------------------------------------------------------------------ request building

    def _params(
        self,
        messages: list[ChatMessage],
        tier: str | None,
        tools: list[ToolSpec] | None,
        max_tokens: int,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.select_model(tier, tools),
            "messages": [to_openai_message(m) for m in messages],
            self.token_param: max_tokens,
        }
        if tools:
            params["tools"] = [to_openai_tool(t) for t in tools]
        return params

    def _map_error(self, exc: BaseException) -> LLMError:
        """The `LLMError` for an SDK/transport exception (messages never carry the key)."""
        return map_sdk_error(exc, openai, self.name, self._secret, _openai_detail)

    # ------------------------------------------------------------------ complete

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
        params = self._params(messages, tier, tools, max_tokens)
        if json_mode:
            params["response_format"] = {"type": "json_object"}
        limit = timeout or self.timeout

        async def attempt() -> Any:
            try:
                async with asyncio.timeout(limit):
                    return await self.client.chat.completions.create(**params, timeout=limit)
            except Exception as exc:
                raise self._map_error(exc) from exc

        response = await self.retry.run(attempt)
        completion = self._parse_completion(response, params["model"])
        if json_mode:
            completion.text = strip_json_fence(completion.text)
        return completion

    def _parse_completion(self, response: Any, requested_model: str) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            error = getattr(response, "error", None)  # OpenRouter reports some failures as 200 + {"error"}
            if error is not None:
                code = error.get("code") if isinstance(error, dict) else None
                if isinstance(code, int) and (code >= 500 or code == 429):
                    raise LLMUnavailable(f"{self.name} reported an upstream error.", provider=self.name, status=code)
            raise LLMBadOutput(f"{self.name} returned no answer.", provider=self.name)
        message = choices[0].message
        calls = []
        for raw in message.tool_calls or []:
            function = getattr(raw, "function", None)
            if function is None or not function.name:
                raise LLMBadOutput(f"{self.name} returned a malformed tool call.", provider=self.name)
            calls.append(
                ToolCall(
                    id=raw.id or new_call_id(),
                    name=function.name,
                    arguments=parse_tool_arguments(function.arguments, function.name, self.name),
                )
            )
        usage = getattr(response, "usage", None)
        return Completion(
            text=message.content or "",
            tool_calls=calls,
            model=getattr(response, "model", None) or requested_model,
            usage=make_usage(usage.prompt_tokens, usage.completion_tokens) if usage else empty_usage(),
        )

    # ------------------------------------------------------------------ stream

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
                    sdk_stream = await self.client.chat.completions.create(
                        **params, stream=True, stream_options={"include_usage": True}, timeout=limit
                    )
                    chunks = sdk_stream.__aiter__()
                    first = await anext(chunks, None)
                return sdk_stream, chunks, first
            except BaseException as exc:
                if sdk_stream is not None:
                    await sdk_stream.close()
                if isinstance(exc, Exception):
                    raise self._map_error(exc) from exc
                raise

        sdk_stream, chunks, chunk = await self.retry.run(open_stream)
        if chunk is None:
            await sdk_stream.close()
            raise LLMBadOutput(f"{self.name} returned an empty stream.", provider=self.name)
        calls = ToolCallAssembler(self.name)
        usage = empty_usage()
        try:
            while chunk is not None:
                if getattr(chunk, "usage", None):
                    usage = make_usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        yield StreamEvent("text", text=delta.content)
                    for part in delta.tool_calls or []:
                        function = part.function
                        calls.add(
                            part.index,
                            part.id,
                            function.name if function else None,
                            function.arguments if function else None,
                        )
                try:
                    chunk = await anext(chunks, None)
                except Exception as exc:
                    raise self._map_error(exc) from exc
            for call in calls.finish():
                yield StreamEvent("tool_call", tool_call=call)
            yield StreamEvent("done", usage=usage)
        finally:
            await sdk_stream.close()

    async def aclose(self) -> None:
        await self.client.close()


# ---------------------------------------------------------------------------------------------
# Wire conversion


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    """A `ChatMessage` as an OpenAI chat-completions message dict."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def to_openai_tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects streamed tool-call deltas, keyed by their ``index``, into complete `ToolCall`s.

    The first delta of a call carries its id and name; later ones append argument text. Deltas
    without an index (some compatible servers) are matched by id, else start a new call.
    """

    def __init__(self, provider: str):
        self.provider = provider
        self._calls: dict[int, _PartialCall] = {}

    def add(self, index: int | None, call_id: str | None, name: str | None, arguments: Any) -> None:
        if index is None:
            index = next((i for i, c in self._calls.items() if call_id and c.id == call_id), len(self._calls))
        call = self._calls.setdefault(index, _PartialCall())
        if call_id and not call.id:
            call.id = call_id
        if name and not call.name:
            call.name = name
        if isinstance(arguments, dict):  # some servers send the decoded object at once
            call.arguments = [json.dumps(arguments)]
        elif arguments:
            call.arguments.append(arguments)

    def finish(self) -> list[ToolCall]:
        """The complete calls in index order; `LLMBadOutput` if a call has no name or its
        arguments are not a JSON object."""
        result = []
        for _, call in sorted(self._calls.items()):
            if not call.name:
                raise LLMBadOutput(f"{self.provider} streamed a tool call without a name.", provider=self.provider)
            arguments = parse_tool_arguments("".join(call.arguments), call.name, self.provider)
            result.append(ToolCall(id=call.id or new_call_id(), name=call.name, arguments=arguments))
        return result


def _openai_detail(exc: Any) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    return body.get("message") if isinstance(body.get("message"), str) else None
