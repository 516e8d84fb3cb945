"""The LLM layer with the real `openai` and `anthropic` clients against a scripted HTTP peer."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from clara.llm import (
    AnthropicProvider,
    ChatMessage,
    LLMBadOutput,
    LLMError,
    LLMSettings,
    LLMTimeout,
    LLMUnavailable,
    OpenAICompatProvider,
    Tool,
    ToolCall,
    ToolSpec,
    make_llm,
    run_tool_loop,
    validate_arguments,
)
from tests.llm_stub import (
    LLMStub,
    Reply,
    delayed,
    error,
    invalid_json_body,
    json_reply,
    system_text,
    tool_call,
    tool_calls,
)

KEY = "sk-test-0123456789abcdefSECRET"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"],
    },
)
CHAT = [ChatMessage.system("You are Clara."), ChatMessage.user("What is the capital of France?")]


@pytest.fixture
def stub():
    with LLMStub() as server:
        yield server


def openai_provider(stub: LLMStub, **kw) -> OpenAICompatProvider:
    options = {
        "base_url": stub.base_url,
        "api_key": KEY,
        "model": "base-model",
        "tier_models": {"high": "big-model", "low": "small-model"},
        "timeout": 5.0,
        "retry_backoff": 0.01,
    }
    return OpenAICompatProvider(**{**options, **kw})


def anthropic_provider(stub: LLMStub, **kw) -> AnthropicProvider:
    options = {
        "base_url": stub.anthropic_base_url,
        "api_key": KEY,
        "model": "claude-base",
        "tier_models": {"high": "claude-big", "low": "claude-small"},
        "timeout": 5.0,
        "retry_backoff": 0.01,
    }
    return AnthropicProvider(**{**options, **kw})


@pytest.fixture
async def llm(stub):
    provider = openai_provider(stub)
    yield provider
    await provider.aclose()


@pytest.fixture
async def claude(stub):
    provider = anthropic_provider(stub)
    yield provider
    await provider.aclose()


async def collect(stream):
    return [event async for event in stream]


def weather_tool(calls: list[dict]) -> Tool:
    async def handler(args: dict) -> str:
        calls.append(args)
        return f"sunny, 21°C in {args['city']}"

    return Tool(WEATHER, handler)


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible


async def test_complete_sends_the_prompt_and_returns_the_answer(stub, llm):
    stub.script(["Paris is the capital of France."])
    result = await llm.complete(CHAT, max_tokens=77)
    assert result.text == "Paris is the capital of France."
    assert result.tool_calls == []
    assert result.model == "base-model"
    assert result.usage["output_tokens"] == 6 and result.usage["input_tokens"] > 0
    body = stub.requests[0]
    assert body["messages"] == [
        {"role": "system", "content": "You are Clara."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert body["max_tokens"] == 77 and "stream" not in body and "tools" not in body
    assert stub.calls[0].headers["authorization"] == f"Bearer {KEY}"


async def test_stream_yields_text_in_several_deltas_then_done(stub, llm):
    stub.script(["The capital of France is Paris, of course."])
    events = await collect(llm.stream(CHAT))
    texts = [e.text for e in events if e.kind == "text"]
    assert len(texts) >= 5
    assert "".join(texts) == "The capital of France is Paris, of course."
    assert [e.kind for e in events][-1] == "done" and events[-1].usage["output_tokens"] == 8
    assert stub.requests[0]["stream"] is True
    assert stub.requests[0]["stream_options"] == {"include_usage": True}


async def test_streamed_tool_calls_are_assembled_from_split_deltas(stub, llm):
    args = {"city": "Paris", "unit": "C", "note": "a fairly long argument string to split"}
    stub.script([Reply(text="Let me check.", tool_calls=[{"name": "get_weather", "arguments": args, "id": "c1"}])])
    events = await collect(llm.stream(CHAT, tools=[WEATHER]))
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["tool_call", "done"] and kinds.count("tool_call") == 1
    assert kinds.index("tool_call") > max(i for i, k in enumerate(kinds) if k == "text")
    call = events[-2].tool_call
    assert call == ToolCall("c1", "get_weather", args)
    assert stub.requests[0]["tools"][0]["function"]["name"] == "get_weather"
    assert stub.requests[0]["tools"][0]["function"]["parameters"] == WEATHER.parameters


async def test_two_streamed_tool_calls_keep_their_order(stub, llm):
    stub.script([tool_calls(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"}))])
    events = await collect(llm.stream(CHAT, tools=[WEATHER]))
    assert [e.tool_call.arguments["city"] for e in events if e.kind == "tool_call"] == ["Oslo", "Rome"]


async def test_complete_returns_tool_calls_and_json_mode(stub, llm):
    stub.script([tool_call("get_weather", {"city": "Lyon"}, id="x9"), Reply(text='```json\n{"ok": true}\n```')])
    result = await llm.complete(CHAT, tools=[WEATHER])
    assert result.tool_calls == [ToolCall("x9", "get_weather", {"city": "Lyon"})]
    result = await llm.complete(CHAT, json_mode=True)
    assert json.loads(result.text) == {"ok": True}
    assert stub.requests[1]["response_format"] == {"type": "json_object"}


async def test_history_with_tool_calls_is_sent_in_openai_shape(stub, llm):
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    history = [*CHAT, ChatMessage.assistant("", [call]), ChatMessage.tool(call, "sunny")]
    await llm.complete(history, tools=[WEATHER])
    sent = stub.requests[0]["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


async def test_a_500_is_retried_then_succeeds(stub, llm):
    stub.script([error(500), "recovered"])
    assert (await llm.complete(CHAT)).text == "recovered"
    stub.script([error(503), error(429, headers={"retry-after": "0"}), "streamed fine"])
    events = await collect(llm.stream(CHAT))
    assert "".join(e.text for e in events if e.kind == "text") == "streamed fine"
    assert len(stub.requests) == 5


async def test_persistent_500_raises_unavailable_after_retries(stub, llm):
    stub.script([error(500)] * 3)
    with pytest.raises(LLMUnavailable) as info:
        await llm.complete(CHAT)
    assert info.value.status == 500 and len(stub.requests) == 3  # 1 + LLM_MAX_RETRIES
    stub.script([error(429)] * 3)
    with pytest.raises(LLMUnavailable, match="rate limiting"):
        await collect(llm.stream(CHAT))


async def test_client_errors_are_not_retried_and_never_show_the_key(stub, llm):
    stub.script([error(400, f"bad model; key was {KEY}"), error(401, f"invalid key {KEY}")])
    with pytest.raises(LLMError) as info:
        await llm.complete(CHAT)
    assert type(info.value) is LLMError and "bad model" in str(info.value) and KEY not in str(info.value)
    with pytest.raises(LLMError, match="credentials") as info:
        await llm.complete(CHAT)
    assert KEY not in str(info.value) and KEY not in repr(llm)
    assert len(stub.requests) == 2


async def test_delay_beyond_timeout_raises_timeout(stub):
    provider = openai_provider(stub, max_retries=1)
    stub.script([delayed(1.0), delayed(1.0)])
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await provider.complete(CHAT, timeout=0.3)
    assert time.monotonic() - started < 0.95 and len(stub.requests) == 2  # timed out twice (one retry)
    stub.script([delayed(1.0)] * 2)
    with pytest.raises(LLMTimeout):
        await collect(provider.stream(CHAT, timeout=0.3))
    await provider.aclose()


async def test_a_stream_is_not_retried_after_its_first_chunk(stub, llm):
    stub.script([Reply(text="one two three four five six", drop_after=4), "must not be used"])
    seen = []
    with pytest.raises(LLMUnavailable):
        async for event in llm.stream(CHAT):
            seen.append(event.text)
    assert "".join(seen) == "one two three "  # role chunk + three words, then the connection broke
    assert len(stub.requests) == 1 and stub.pending == 1


async def test_invalid_output_raises_bad_output(stub, llm):
    stub.script([tool_call("get_weather", '{"city": "Par'), tool_call("get_weather", "[1, 2]")])
    with pytest.raises(LLMBadOutput, match="get_weather"):
        await collect(llm.stream(CHAT, tools=[WEATHER]))
    with pytest.raises(LLMBadOutput):
        await llm.complete(CHAT, tools=[WEATHER])
    stub.script([invalid_json_body(), invalid_json_body()])
    with pytest.raises(LLMBadOutput):
        await llm.complete(CHAT)
    with pytest.raises(LLMBadOutput):
        await collect(llm.stream(CHAT))
    assert len(stub.requests) == 4  # bad output is not retried


async def test_tier_models_and_low_tier_tool_calls_use_the_base_model(stub, llm):
    assert llm.model_for(None) == "base-model"
    assert llm.model_for("high") == "big-model" and llm.model_for("low") == "small-model"
    assert llm.model_for("mid") == "base-model"  # no mid model configured
    with pytest.raises(ValueError):
        llm.model_for("huge")
    await llm.complete(CHAT, tier="high")
    await llm.complete(CHAT, tier="low")
    await llm.complete(CHAT, tier="low", tools=[WEATHER])
    await collect(llm.stream(CHAT, tier="low", tools=[WEATHER]))
    assert [r["model"] for r in stub.requests] == ["big-model", "small-model", "base-model", "base-model"]
    defaulted = openai_provider(stub, default_tier="low")
    assert defaulted.model_for(None) == "small-model"
    assert defaulted.select_model(None, [WEATHER]) == "base-model"
    assert defaulted.select_model("high", [WEATHER]) == "big-model"
    await defaulted.aclose()


async def test_responder_answers_when_the_script_is_empty(stub, llm):
    def responder(body):
        if "extract facts" in system_text(body):
            return json_reply({"facts": ["likes tea"]})
        return None

    stub.responder = responder
    extracted = await llm.complete([ChatMessage.system("extract facts"), ChatMessage.user("I like tea")])
    assert json.loads(extracted.text) == {"facts": ["likes tea"]}
    assert (await llm.complete([ChatMessage.user("hello")])).text == "echo: hello"


# ---------------------------------------------------------------------------------------------
# Tool loop


async def test_tool_loop_runs_the_tool_and_returns_the_final_answer(stub, llm):
    handled: list[dict] = []
    streamed: list[str] = []

    async def on_text(delta: str) -> None:
        streamed.append(delta)

    stub.script([tool_call("get_weather", {"city": "Paris"}, id="w1"), "It is sunny in Paris today."])
    result = await run_tool_loop(llm, CHAT, [weather_tool(handled)], on_text=on_text)
    assert result.text == "It is sunny in Paris today." and result.steps == 2 and not result.stopped
    assert handled == [{"city": "Paris"}]
    assert result.tool_calls == [(ToolCall("w1", "get_weather", {"city": "Paris"}), "sunny, 21°C in Paris")]
    assert "".join(streamed) == result.text and len(streamed) > 1
    second = stub.requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == "w1"
    assert second[-1] == {"role": "tool", "tool_call_id": "w1", "content": "sunny, 21°C in Paris"}
    assert [m.role for m in result.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert result.usage["output_tokens"] > 0


async def test_tool_loop_turns_tool_failures_into_results(stub, llm):
    handled: list[dict] = []

    async def broken(args: dict) -> str:
        raise RuntimeError("disk on fire")

    tools = [weather_tool(handled), Tool(ToolSpec("broken", "fails", {"type": "object"}), broken)]
    stub.script(
        [
            tool_calls(("no_such_tool", {}), ("get_weather", {"city": 5}), ("get_weather", {}), ("broken", {})),
            "Sorry, I could not check.",
        ]
    )
    result = await run_tool_loop(llm, CHAT, tools)
    assert result.text == "Sorry, I could not check." and handled == []
    outputs = [r for _, r in result.tool_calls]
    assert outputs[0].startswith("Error: unknown tool 'no_such_tool'") and "get_weather" in outputs[0]
    assert "arguments.city must be of type string" in outputs[1]
    assert "arguments.city is required" in outputs[2]
    assert "RuntimeError: disk on fire" in outputs[3]
    tool_messages = [m for m in stub.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == outputs


async def test_tool_loop_stops_at_the_step_limit(stub, llm):
    stub.responder = lambda body: tool_call("get_weather", {"city": "Paris"}, text="Checking.")
    result = await run_tool_loop(llm, CHAT, [weather_tool([])], max_steps=3)
    assert result.stopped and result.steps == 3 and len(result.tool_calls) == 3
    assert len(stub.requests) == 3
    assert result.text.startswith("Checking.") and result.text.endswith(
        "[Stopped after 3 steps without a final answer.]"
    )


async def test_tool_loop_has_a_whole_loop_timeout(stub, llm):
    async def slow(args: dict) -> str:
        await asyncio.sleep(5)
        return "late"

    stub.script([tool_call("slow", {})])
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await run_tool_loop(llm, CHAT, [Tool(ToolSpec("slow", "slow", {"type": "object"}), slow)], timeout=0.5)
    assert time.monotonic() - started < 2


def test_validate_arguments_subset():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "flag": {"type": "boolean"},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    assert validate_arguments(schema, {"n": 2, "tags": ["a"], "flag": True}) == []
    assert validate_arguments(schema, {"n": True}) == ["arguments.n must be of type integer, got boolean"]
    assert validate_arguments(schema, {"n": 0, "tags": [1], "x": 1}) == [
        "arguments.n must be >= 1",
        "arguments.tags[0] must be of type string, got integer",
        "arguments.x is not an allowed property",
    ]


# ---------------------------------------------------------------------------------------------
# Anthropic


async def test_anthropic_complete_lifts_the_system_prompt(stub, claude):
    stub.script(["Paris."])
    result = await claude.complete(CHAT, tier="high", max_tokens=50, json_mode=False)
    assert result.text == "Paris." and result.model == "claude-big" and result.usage["input_tokens"] > 0
    body = stub.requests[0]
    assert stub.calls[0].path == "/v1/messages"
    assert body["system"] == "You are Clara." and body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]


async def test_anthropic_stream_text_and_tool_use(stub, claude):
    args = {"city": "Paris", "unit": "F"}
    stub.script(
        [
            "Well, it is Paris, naturally.",
            Reply(text="Checking.", tool_calls=[{"name": "get_weather", "arguments": args}]),
        ]
    )
    events = await collect(claude.stream(CHAT))
    texts = [e.text for e in events if e.kind == "text"]
    assert len(texts) >= 4 and "".join(texts) == "Well, it is Paris, naturally."
    assert events[-1].kind == "done" and events[-1].usage["output_tokens"] == 5
    events = await collect(claude.stream(CHAT, tier="low", tools=[WEATHER]))
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].arguments == args
    body = stub.requests[1]
    assert body["stream"] is True and body["model"] == "claude-base"  # tools never run on the low tier
    assert body["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.parameters}
    ]


async def test_anthropic_tool_loop_sends_tool_results_as_blocks(stub, claude):
    stub.script([tool_call("get_weather", {"city": "Oslo"}, id="toolu_1"), "Sunny in Oslo."])
    result = await run_tool_loop(claude, CHAT, [weather_tool([])])
    assert result.text == "Sunny in Oslo." and result.steps == 2
    messages = stub.requests[1]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
    }
    assert messages[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21°C in Oslo"}],
    }


async def test_anthropic_errors(stub, claude):
    stub.script([error(529), "after overload"])
    assert (await claude.complete(CHAT)).text == "after overload"
    stub.script([tool_call("get_weather", '{"city": '), tool_call("get_weather", "not json")])
    with pytest.raises(LLMBadOutput):
        await collect(claude.stream(CHAT, tools=[WEATHER]))
    with pytest.raises(LLMBadOutput):
        await claude.complete(CHAT, tools=[WEATHER])
    stub.script([error(500)] * 3)
    with pytest.raises(LLMUnavailable):
        await claude.complete(CHAT)
    provider = anthropic_provider(stub, max_retries=0)
    stub.script([delayed(1.0)])
    with pytest.raises(LLMTimeout):
        await provider.complete(CHAT, timeout=0.3)
    await provider.aclose()


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in LLMSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir("/")  # no .env


async def test_make_llm_memory_only_and_providers(clean_env, monkeypatch):
    assert make_llm(LLMSettings()) is None
    assert make_llm(LLMSettings(llm_provider="none")) is None
    assert make_llm(LLMSettings(llm_provider="openrouter")) is None  # key missing
    monkeypatch.setenv("LLM_PROVIDER", "OpenRouter")
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_MODEL_HIGH", "or-big")
    monkeypatch.setenv("MODEL_TIER", "high")
    monkeypatch.setenv("OPENROUTER_MODEL_LOW", "")
    settings = LLMSettings()
    assert settings.llm_timeout_seconds == 60 and settings.llm_max_retries == 2 and settings.llm_tool_max_steps == 5
    provider = make_llm(settings)
    assert isinstance(provider, OpenAICompatProvider) and provider.name == "openrouter"
    assert str(provider.client.base_url).rstrip("/") == "https://openrouter.ai/api/v1"
    assert provider.model_for(None) == "or-big" and provider.model_for("low") == provider.model
    await provider.aclose()

    ollama = make_llm(LLMSettings(llm_provider="ollama", ollama_model="qwen3"))
    assert isinstance(ollama, OpenAICompatProvider) and ollama.model == "qwen3"
    assert str(ollama.client.base_url).startswith("http://127.0.0.1:11434/v1")
    await ollama.aclose()
    nano = make_llm(LLMSettings(llm_provider="nanogpt", nanogpt_api_key="k"))
    assert str(nano.client.base_url).startswith("https://nano-gpt.com/api/v1")
    await nano.aclose()
    claude = make_llm(LLMSettings(llm_provider="anthropic", anthropic_api_key="k", anthropic_model="c"))
    assert isinstance(claude, AnthropicProvider) and claude.model == "c"
    await claude.aclose()
    custom = make_llm(LLMSettings(llm_provider="openai", custom_openai_api_key="k"))
    assert custom.token_param == "max_completion_tokens"
    await custom.aclose()
    with pytest.raises(ValueError):
        LLMSettings(llm_provider="gemini")


async def test_make_llm_provider_talks_to_the_stub(clean_env, stub):
    settings = LLMSettings(
        llm_provider="openai", custom_openai_api_key=KEY, custom_openai_base_url=stub.base_url, llm_max_retries=0
    )
    provider = make_llm(settings)
    stub.script(["hi from the stub"])
    assert (await provider.complete(CHAT)).text == "hi from the stub"
    assert stub.requests[0]["max_tokens"] == 1024 and stub.requests[0]["model"] == "gpt-4o"
    await provider.aclose()
