"""The real `openai` Python SDK, sync and async, pointed at the service's `/v1` (issue #8): an app
written for OpenAI works with only its base URL changed. The service talks to the fake upstream
on a loopback port; both sides are real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from testkit.fake_upstream import (
    DONE,
    FakeUpstream,
    Reply,
    answer_pieces,
    chunk_event,
    error_body,
    split_awkwardly,
)
from testkit.openai_fakes import (
    chat_completion_body,
    choices_pieces,
    openai_pieces,
    response_body,
    responses_pieces,
    tool_call_pieces,
)
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from tests.test_cancellation import assert_upstream_closed_promptly

TOKENS = [" Hello", ",", " world", "!"]
ANSWER = "".join(TOKENS)
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def client_for(service: RunningService, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=service.base_url + "/v1", api_key="client-key", **options)


def async_client_for(service: RunningService, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=service.base_url + "/v1", api_key="client-key", **options)


def text_of(chunks: list[Any], index: int = 0) -> str:
    return "".join(
        choice.delta.content or ""
        for chunk in chunks
        for choice in chunk.choices
        if choice.index == index
    )


def summary(service: RunningService) -> dict[str, Any]:
    (only,) = service.wait_for_summaries(1)
    return only


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_sync(
    service: RunningService, upstream: FakeUpstream, include_usage: bool
) -> None:
    upstream.queue(Reply(pieces=list(split_awkwardly(b"".join(answer_pieces(TOKENS))))))
    options: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    with client_for(service) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
        )
        chunks = list(stream)
    assert text_of(chunks) == ANSWER
    assert chunks[-1 if not include_usage else -2].choices[0].finish_reason == "stop"
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    if include_usage:
        assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in usage_chunks] == [
            (7, 4)
        ]
    else:
        assert usage_chunks == []
    # Usage is always asked for upstream: the metrics need it.
    assert upstream.exchanges[0].json()["stream_options"] == {"include_usage": True}
    record = summary(service)
    assert record["endpoint"] == "/v1/chat/completions"
    assert record["outcome"] == "completed"
    assert record["finish_reason"] == "stop"
    assert record["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert record["output_tokens"] == 4
    assert record["ttft_ms"] is not None
    assert record["upstream_ttft_ms"] is not None


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_async(
    service: RunningService, upstream: FakeUpstream, include_usage: bool
) -> None:
    # OpenAI's own bytes: compact JSON, so text tokens take the relay's fast path.
    upstream.queue(Reply(pieces=openai_pieces(TOKENS), pause=0.01))
    options: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with async_client_for(service) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
        )
        chunks = [chunk async for chunk in stream]
    assert text_of(chunks) == ANSWER
    assert any(chunk.usage is not None for chunk in chunks) is include_usage
    record = summary(service)
    assert record["outcome"] == "completed"
    assert record["delivered_text_deltas"] == len(TOKENS)
    assert record["tokens_per_second"] > 0  # paced 10 ms apart
    assert record["usage"]["completion_tokens"] == len(TOKENS)


def test_chat_not_streamed_sync(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(body=chat_completion_body("Hi there.")))
    with client_for(service) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hi there."
    assert completion.usage is not None
    assert completion.usage.total_tokens == 8
    sent = upstream.exchanges[0].json()
    assert "stream_options" not in sent
    assert sent["messages"] == MESSAGES
    record = summary(service)
    assert record["outcome"] == "completed"
    assert record["output_tokens"] == 3


async def test_chat_not_streamed_async(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(body=chat_completion_body("Hi there.")))
    async with async_client_for(service) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hi there."


def test_every_parameter_reaches_the_upstream_untouched(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        }
    ]
    parameters: dict[str, Any] = {
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "text"},
        "temperature": 0.3,
        "top_p": 0.9,
        "n": 1,
        "stop": ["\n\n"],
        "seed": 42,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "user-1234",
        "reasoning_effort": "low",
        "max_completion_tokens": 300,
        "metadata": {"team": "search"},
        "stream_options": {"include_usage": False},
    }
    with client_for(service) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_body={"a_field_nobody_knows": {"nested": [1, 2]}},
            **parameters,
        )
        list(stream)
    sent = upstream.exchanges[0]
    body = sent.json()
    assert body.pop("stream_options") == {"include_usage": True}
    parameters.pop("stream_options")
    assert body == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "a_field_nobody_knows": {"nested": [1, 2]},
        **parameters,
    }
    # The service's own upstream key goes upstream; the client's key never does.
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert "client-key" not in json.dumps(sent.headers)


def test_two_choices(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=choices_pieces([[" one", " a"], [" two", " b", " c"]])))
    with client_for(service) as client:
        chunks = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, n=2)
        )
    assert (text_of(chunks, 0), text_of(chunks, 1)) == (" one a", " two b c")
    assert upstream.exchanges[0].json()["n"] == 2
    assert summary(service)["output_tokens"] == 5


def test_tool_call_round_trip(service: RunningService, upstream: FakeUpstream) -> None:
    arguments = '{"city": "Par', "is, Fr", "\u00e9", 'nce"}'
    pieces = tool_call_pieces("call_abc123", "get_weather", arguments)
    upstream.queue(
        Reply(pieces=list(split_awkwardly(b"".join(pieces)))),
        Reply(pieces=answer_pieces([" Sunny", " in", " Paris."])),
    )
    with client_for(service) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                tools=[{"type": "function", "function": {"name": "get_weather"}}],
            )
        )
        calls: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += call.id or ""
                    assert call.function is not None
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
        assert calls == {
            0: {"id": "call_abc123", "name": "get_weather", "arguments": "".join(arguments)}
        }
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert json.loads(calls[0]["arguments"]) == {"city": "Paris, Fr\u00e9nce"}

        follow_up: list[Any] = [
            *MESSAGES,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123", "content": '{"sky": "clear"}'},
        ]
        answer = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=follow_up, stream=True)
        )
    assert text_of(answer) == " Sunny in Paris."
    assert upstream.exchanges[1].json()["messages"] == follow_up
    first, second = service.wait_for_summaries(2)
    assert first["finish_reason"] == "tool_calls"
    assert first["outcome"] == second["outcome"] == "completed"


def test_responses_stream_sync(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=responses_pieces(TOKENS)))
    with client_for(service) as client:
        events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == ANSWER
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == ANSWER
    assert upstream.exchanges[0].path == "/v1/responses"
    assert upstream.exchanges[0].json() == {
        "model": "gpt-4o-mini",
        "input": "Say hello",
        "stream": True,
    }
    record = summary(service)
    assert record["endpoint"] == "/v1/responses"
    assert record["finish_reason"] == "completed"
    assert record["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    assert record["delivered_text_deltas"] == 4


async def test_responses_stream_async(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=responses_pieces(TOKENS), pause=0.01))
    async with async_client_for(service) as client:
        stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == ANSWER


def test_responses_not_streamed(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(body=response_body("Hi there.")))
    with client_for(service) as client:
        response = client.responses.create(model="gpt-4o-mini", input="hi")
    assert response.output_text == "Hi there."
    assert summary(service)["usage"]["completion_tokens"] == 2


def test_upstream_rate_limit_is_rate_limit_error_with_retry_after(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(status=429, headers={"retry-after": "7"}, body=error_body("slow down", "requests"))
    )
    with client_for(service) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.headers["x-should-retry"] == "true"
    assert raised.value.code == "rate_limited"
    assert summary(service)["outcome"] == "error"


def test_upstream_refusal_keeps_its_status_param_and_code(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(
            status=404,
            body=json.dumps(
                {
                    "error": {
                        "message": "The model `nope` does not exist",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            ).encode(),
        )
    )
    with client_for(service) as client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"
    assert "does not exist" in raised.value.message


def test_mid_stream_error_is_api_error(service: RunningService, upstream: FakeUpstream) -> None:
    failure = b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    start = [chunk_event(role="assistant", content=""), chunk_event(content=" Hi")]
    upstream.queue(Reply(pieces=[*start, failure]))
    received: list[Any] = []
    with client_for(service) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as raised:
            received.extend(stream)
    assert text_of(received) == " Hi"
    assert "The server had an error" in raised.value.message
    assert raised.value.code == "upstream_unavailable"
    record = summary(service)
    assert record["outcome"] == "error"
    assert record["error_type"] == "upstream_unavailable"


def test_mid_stream_responses_error_is_api_error(
    service: RunningService, upstream: FakeUpstream
) -> None:
    pieces = responses_pieces(TOKENS)[:6]  # up to the second text delta
    pieces.append(
        b'event: error\ndata: {"type": "error", "code": "server_error", '
        b'"message": "model crashed", "param": null, "sequence_number": 6}\n\n'
    )
    upstream.queue(Reply(pieces=pieces))
    with client_for(service) as client, pytest.raises(openai.APIError) as raised:
        list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    assert "model crashed" in raised.value.message


def test_closing_the_stream_early_closes_the_upstream_sync(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces([f" t{i}" for i in range(300)]), pause=0.02))
    with client_for(service) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        for index, _ in enumerate(stream):
            if index == 3:
                break
        closed_at = time.monotonic()
        stream.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    assert summary(service)["outcome"] == "cancelled"


async def test_closing_the_stream_early_closes_the_upstream_async(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=responses_pieces([f" t{i}" for i in range(300)]), pause=0.02))
    async with async_client_for(service) as client:
        stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        seen = 0
        async for event in stream:
            seen += event.type == "response.output_text.delta"
            if seen == 3:
                break
        closed_at = time.monotonic()
        await stream.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    record = summary(service)
    assert record["outcome"] == "cancelled"
    assert record["endpoint"] == "/v1/responses"


def test_models_are_the_upstreams(service: RunningService, upstream: FakeUpstream) -> None:
    listing = {
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
            {"id": "org/llama-3", "object": "model", "created": 1, "owned_by": "vllm"},
        ],
    }
    upstream.queue(*[Reply(body=json.dumps(listing).encode()) for _ in range(3)])
    with client_for(service) as client:
        assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "org/llama-3"]
        assert client.models.retrieve("org/llama-3").owned_by == "vllm"
        with pytest.raises(openai.NotFoundError) as raised:
            client.models.retrieve("nope")
    assert raised.value.code == "model_not_found"
    assert upstream.exchanges[0].path == "/v1/models"


def test_models_without_an_upstream_list_are_the_default(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(status=404, body=b'{"detail": "Not Found"}'))
    with client_for(service) as client:
        assert [model.id for model in client.models.list()] == ["gpt-4o-mini"]


def test_responses_on_an_upstream_without_them_is_501_naming_the_setting(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.default_reply = Reply(status=404, body=b'{"detail": "Not Found"}')
    # The SDK retries 5xx by default; `x-should-retry: false` tells it not to.
    with (
        client_for(service, max_retries=2) as client,
        pytest.raises(openai.InternalServerError) as raised,
    ):
        client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    assert raised.value.status_code == 501
    assert "OPENAI_BASE_URL" in raised.value.message
    assert "/v1/chat/completions" in raised.value.message
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.exchanges) == 1


def test_service_keys_are_the_sdk_api_key_and_never_go_upstream(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        service_api_keys="svc-key-one,svc-key-two",
    )
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    base_url = running.base_url + "/v1"
    with openai.OpenAI(base_url=base_url, api_key="svc-key-two", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert text_of(chunks) == ANSWER
    assert upstream.exchanges[0].headers["authorization"] == f"Bearer {TEST_KEY}"
    assert "svc-key" not in json.dumps(upstream.exchanges[0].headers)
    with openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert raised.value.code == "unauthorized"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert len(upstream.exchanges) == 1


@pytest.mark.parametrize("status", [400, 401, 500])
def test_the_upstream_key_is_never_echoed(
    service: RunningService, upstream: FakeUpstream, status: int
) -> None:
    echo = f"Incorrect API key provided: {TEST_KEY}. You can find your key at ..."
    upstream.queue(Reply(status=status, body=error_body(echo, "invalid_request_error")))
    with client_for(service) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert TEST_KEY not in raised.value.response.text
    assert "sk-" not in raised.value.response.text


def test_demo_model_serves_every_v1_route(service_factory: ServiceFactory) -> None:
    running = service_factory(
        PROVIDER="demo", demo_tokens_per_second=2000, demo_first_token_delay_seconds=0
    )
    with client_for(running) as client:
        chunks = list(
            client.chat.completions.create(
                model="anything",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert text_of(chunks).startswith('You asked: "Say hello".')
        assert chunks[-1].usage is not None
        events = list(client.responses.create(model="anything", input="Hi", stream=True))
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text.startswith('You asked: "Hi".')
        assert [model.id for model in client.models.list()] == ["demo"]


def test_done_is_relayed_only_once(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=[*answer_pieces(TOKENS)[:-1], DONE]))
    response = httpx.post(
        service.base_url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
        timeout=30,
    )
    assert response.text.count("[DONE]") == 1
    assert response.text.endswith("data: [DONE]\n\n")


def test_responses_404_about_the_model_stays_a_404(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(
            status=404,
            body=error_body("The model `nope` does not exist", "invalid_request_error", "x"),
        )
    )
    with client_for(service) as client, pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="nope", input="hi")
    assert "does not exist" in raised.value.message
