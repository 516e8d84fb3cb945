"""Provider-neutral chat types and the `LLMProvider` interface.

Everything Clara says to a language model goes through these types, so the chat engine, the tool
loop and the memory extractors never see a vendor SDK. Providers (`OpenAICompatProvider`,
`AnthropicProvider`) translate them to and from their wire formats.

Shapes and units:
- `ChatMessage.content` is plain text; tool results travel as role ``"tool"`` messages whose
  `tool_call_id` names the `ToolCall.id` they answer.
- `ToolCall.arguments` is the already JSON-decoded argument object (always a dict).
- `ToolSpec.parameters` is a JSON Schema object (``{"type": "object", "properties": ...}``).
- ``usage`` dicts hold token counts: ``{"input_tokens": int, "output_tokens": int, "total_tokens": int}``
  (zeros when the peer does not report usage).
- timeouts are in seconds.

Errors: every failure a caller should handle is an `LLMError`; its message is short, user-safe and
never contains an API key (the SDK's own exception is kept as ``__cause__`` for the logs).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = logging.getLogger("clara.llm")
T = TypeVar("T")

Role = Literal["system", "user", "assistant", "tool"]
Tier = Literal["high", "mid", "low"]
TIERS: tuple[str, ...] = ("high", "mid", "low")


@dataclass
class ToolCall:
    """One tool invocation requested by the model: `id` (opaque, echoed back in the tool result),
    `name` of the tool, and decoded JSON `arguments`."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatMessage:
    """One message of a conversation.

    - ``system``/``user``: `content` only.
    - ``assistant``: `content` (may be empty) and the `tool_calls` it requested.
    - ``tool``: the result text of one tool call, `tool_call_id` set to that call's id; `name` is the
      tool's name (some peers want it).
    """

    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str, tool_calls: list[ToolCall] | None = None) -> ChatMessage:
        return cls("assistant", content, tool_calls=list(tool_calls or []))

    @classmethod
    def tool(cls, call: ToolCall, result: str) -> ChatMessage:
        return cls("tool", result, tool_call_id=call.id, name=call.name)


@dataclass
class ToolSpec:
    """A tool the model may call: `name` (``^[a-zA-Z0-9_-]{1,64}$`` for every provider), a
    `description` for the model, and `parameters`, the JSON Schema of its argument object."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass
class StreamEvent:
    """One event of `LLMProvider.stream`.

    - ``"text"``: `text` is the next delta of the answer (in arrival order).
    - ``"tool_call"``: `tool_call` is one complete call (arguments decoded), emitted after the text.
    - ``"done"``: last event; `usage` holds the token counts (see module doc).
    """

    kind: Literal["text", "tool_call", "done"]
    text: str = ""
    tool_call: ToolCall | None = None
    usage: dict[str, int] | None = None


@dataclass
class Completion:
    """A finished answer: its `text`, the `tool_calls` it requested (possibly empty), the `model`
    that produced it (as reported by the peer), and token `usage`."""

    text: str
    tool_calls: list[ToolCall]
    model: str
    usage: dict[str, int]


# ---------------------------------------------------------------------------------------------
# Errors


class LLMError(Exception):
    """Base of every language-model failure. `str(err)` is a short user-safe message; `provider`
    names the provider and `status` the HTTP status when there was one."""

    default_message = "The language model request failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        self.message = message or self.default_message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after  # seconds, from a Retry-After header
        super().__init__(self.message)


class LLMTimeout(LLMError):
    """The model did not answer within the timeout (after any retries)."""

    default_message = "The language model took too long to answer."


class LLMUnavailable(LLMError):
    """The provider could not be reached or kept failing: HTTP 5xx, connection errors or rate
    limiting (429), after the retries were spent."""

    default_message = "The language model is unavailable right now."


class LLMBadOutput(LLMError):
    """The provider answered with something unusable: a malformed body, or tool arguments that are
    not a JSON object."""

    default_message = "The language model returned malformed output."


_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}")


def redact(text: str, secrets: list[str | None] | tuple[str | None, ...] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key (``sk-...``) masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    detail: str | None = None,
    secret: str | None = None,
) -> LLMError:
    """The `LLMError` for an HTTP error status: 429 and 5xx are `LLMUnavailable` (retryable), 408
    is `LLMTimeout`, anything else a plain `LLMError` (with the peer's own reason for 4xx other
    than 401/403, key-redacted and shortened)."""
    retry_after = _retry_after(headers)
    if status == 429:
        return LLMUnavailable(
            f"{provider} is rate limiting requests.", provider=provider, status=status, retry_after=retry_after
        )
    if status >= 500:
        return LLMUnavailable(
            f"{provider} returned HTTP {status}.", provider=provider, status=status, retry_after=retry_after
        )
    if status == 408:
        return LLMTimeout(f"{provider} timed out (HTTP 408).", provider=provider, status=status)
    if status in (401, 403):
        return LLMError(f"{provider} rejected the credentials (HTTP {status}).", provider=provider, status=status)
    reason = f": {redact(detail, [secret])[:200]}" if detail else "."
    return LLMError(f"{provider} rejected the request (HTTP {status}){reason}", provider=provider, status=status)


def map_sdk_error(
    exc: BaseException, sdk: Any, name: str, secret: str | None, detail: Callable[[Any], str | None]
) -> LLMError:
    """The `LLMError` for an exception from `sdk` (the `openai` or `anthropic` module: both name
    their errors APITimeoutError, APIStatusError, APIConnectionError, APIResponseValidationError,
    APIError) or from the transport. `detail(status_exc)` reads the server's reason; messages
    never carry the key."""
    timeouts, transport = transport_error_classes()
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, (sdk.APITimeoutError, TimeoutError, *timeouts)):
        return LLMTimeout(f"{name} took too long to answer.", provider=name)
    if isinstance(exc, sdk.APIStatusError):
        return status_error(name, exc.status_code, exc.response.headers, detail(exc), secret)
    if isinstance(exc, (sdk.APIConnectionError, *transport)):
        return LLMUnavailable(f"Could not reach {name}.", provider=name)
    if isinstance(exc, (sdk.APIResponseValidationError, ValueError, TypeError, KeyError)):
        return LLMBadOutput(f"{name} returned a malformed response.", provider=name)
    if isinstance(exc, sdk.APIError):  # e.g. an error event inside a stream
        return LLMUnavailable(f"{name} reported an error while answering.", provider=name)
    return LLMError(f"{name} request failed ({type(exc).__name__}).", provider=name)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


@functools.lru_cache(maxsize=1)
def transport_error_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeout classes, other transport error classes) of the HTTP libraries the SDKs use
    (``httpx2`` and/or ``httpx``): streamed bodies can raise them unwrapped."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


def parse_tool_arguments(raw: Any, tool_name: str, provider: str) -> dict[str, Any]:
    """Tool-call arguments as a dict: a JSON object text (empty = ``{}``) or an already decoded
    dict. Anything else raises `LLMBadOutput`."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise LLMBadOutput(f"{provider} sent invalid arguments for tool '{tool_name}'.", provider=provider)
    return value


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def strip_json_fence(text: str) -> str:
    """`text` without a surrounding Markdown code fence (models sometimes wrap JSON in one)."""
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text.strip()


def is_retryable(exc: BaseException) -> bool:
    """Retry timeouts and unavailability (5xx, connection, 429); nothing else."""
    return isinstance(exc, LLMTimeout | LLMUnavailable)


@dataclass
class RetryPolicy:
    """Retries with exponential backoff and jitter for `LLMTimeout`/`LLMUnavailable`.

    `max_retries` extra attempts after the first; waits `backoff * 2**n` seconds (+ up to 50 %
    jitter, at least a server's Retry-After) capped at `max_backoff`.
    """

    max_retries: int = 2
    backoff: float = 0.5
    max_backoff: float = 20.0

    def _wait(self, state: RetryCallState) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (state.attempt_number - 1))
        delay += random.uniform(0, delay / 2)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), self.max_backoff))
        return delay

    @staticmethod
    def _log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("LLM attempt %d failed (%s); retrying", state.attempt_number, exc)

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(max(0, self.max_retries) + 1),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log,
            reraise=True,
        )

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Await `attempt()` until it succeeds, retrying retryable `LLMError`s."""
        async for state in self.retrying():
            with state:
                return await attempt()
        raise AssertionError("unreachable: tenacity reraises the last error")


def empty_usage() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def make_usage(input_tokens: int | None, output_tokens: int | None) -> dict[str, int]:
    i, o = int(input_tokens or 0), int(output_tokens or 0)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


# ---------------------------------------------------------------------------------------------
# Provider interface


class LLMProvider(ABC):
    """A chat model behind one API.

    Tiers: ``"high" | "mid" | "low" | None``. `model_for(None)` is the model of the default tier
    (``MODEL_TIER``) when one is set and configured, else the base model; a tier without its own
    model falls back to the base model. Requests that pass tools never run on the ``"low"`` tier:
    they use the base model instead.

    Subclasses set `name` and implement `complete`, `stream` and `aclose`.
    """

    name: str = "llm"

    def __init__(
        self,
        model: str,
        *,
        tier_models: Mapping[str, str | None] | None = None,
        default_tier: str | None = None,
    ):
        self.model = model
        self.tier_models = {t: m for t, m in (tier_models or {}).items() if m and t in TIERS}
        self.default_tier = default_tier if default_tier in TIERS else None

    def model_for(self, tier: str | None) -> str:
        """The model name for `tier` (``None`` = the default tier, see class doc)."""
        tier = tier or self.default_tier
        if tier is None:
            return self.model
        if tier not in TIERS:
            raise ValueError(f"unknown model tier {tier!r}; expected one of {', '.join(TIERS)}")
        return self.tier_models.get(tier) or self.model

    def select_model(self, tier: str | None, tools: list[ToolSpec] | None) -> str:
        """The model a request runs on: `model_for(tier)`, except that tool requests on the low tier
        use the base model."""
        if tools and (tier or self.default_tier) == "low":
            return self.model
        return self.model_for(tier)

    @abstractmethod
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
        """One non-streamed answer to `messages`.

        `json_mode` asks for a single JSON object as the answer (the caller still parses it).
        `timeout` (seconds) bounds each attempt; ``None`` uses the provider's default.
        Raises `LLMTimeout`, `LLMUnavailable` (after retries), `LLMBadOutput` or `LLMError`.
        """

    @abstractmethod
    def stream(
        self,
        messages: list[ChatMessage],
        *,
        tier: str | None = None,
        tools: list[ToolSpec] | None = None,
        max_tokens: int = 1024,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """An async generator of `StreamEvent`: text deltas as they arrive, then every complete tool
        call, then one ``"done"`` event with usage. Failures before the first event are retried like
        `complete`; after it they raise at once (`LLMTimeout`, `LLMUnavailable`, `LLMBadOutput`)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the HTTP client. The provider is unusable afterwards."""

    async def __aenter__(self) -> LLMProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:  # never shows the key
        return f"<{type(self).__name__} {self.name} model={self.model!r}>"
