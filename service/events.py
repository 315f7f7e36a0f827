"""The normalized stream events: the one vocabulary between upstreams and wire encoders.

Two layers, one direction:

    upstream  -> TextDelta | ReasoningDelta | Finished | UsageReported | Failed
                 (| Routed: which deployment, with UPSTREAMS)   (what the model did)
    relay     -> StreamStarted | TextDelta | ReasoningDelta | StreamEnded | StreamFailed
                                                        (what the client is told)

The OpenAI-compatible routes (issue #8) relay the upstream's own events instead of text: a
`Relayed` carries one upstream event's bytes, to be sent untouched, together with the few facts
the metrics read from it; it passes both layers as it is.

Upstream events say nothing about HTTP; response events carry everything an encoder needs, so an
encoder is a pure function of one event. These are slotted dataclasses rather than pydantic
models: one is built per token, and the hot-path budget is tens of microseconds (issue #2).
`Failed` and `StreamFailed` are always last: an upstream iterator never raises except when
cancelled.

Streams travel in batches (`UpstreamBatch`, `ResponseBatch`): the events one upstream read
completed, so that the response writes them with one system call (issue #16). Batches change
nothing about the events themselves: each is still encoded, numbered and measured on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol

from service.errors import ServiceError


# Not frozen, like `Relayed`: one is made per token, and a frozen dataclass sets its field
# through `object.__setattr__` (a third more instructions per token, issue #16). Nothing
# changes one after it is made.
@dataclass(slots=True)
class TextDelta:
    """A piece of answer text, exactly as the model produced it (never empty)."""

    text: str


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    """A piece of the model's visible reasoning (`reasoning_content` deltas, as vLLM and
    DeepSeek send them), never empty. Only formats that have a place for it send it (the AI
    SDK's UI message stream); the others leave it out, so their text stays the answer alone."""

    text: str


@dataclass(slots=True, frozen=True)
class Finished:
    """The model stopped: `stop`, `length`, `content_filter`, `tool_calls`, ..."""

    reason: str


@dataclass(slots=True, frozen=True)
class Usage:
    """Token counts as the upstream reported them (or as the demo model counted them)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Hidden reasoning (o-series and other reasoning models), included in completion_tokens.
    reasoning_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        counts = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.reasoning_tokens:
            counts["reasoning_tokens"] = self.reasoning_tokens
        return counts


@dataclass(slots=True, frozen=True)
class UsageReported:
    usage: Usage


@dataclass(slots=True, frozen=True)
class Failed:
    """The upstream failed; terminal."""

    error: ServiceError


# Not frozen: a frozen dataclass sets each of its six fields through `object.__setattr__`,
# which costs ~2 µs per token (bench/relay_overhead.py). Nothing changes one after it is made.
@dataclass(slots=True)
class Relayed:
    """One upstream event (or a whole non-streamed body) for the client, as the upstream wrote
    it, and what the metrics need from it, read once where it was decoded."""

    # The SSE `data` payload (or the body), untouched.
    data: bytes
    # The SSE `event` name the upstream gave (the Responses API names its events), else None.
    event: bytes | None = None
    # Carries model output (text, refusal, tool call arguments, reasoning): counts as a token.
    output: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    # False for the usage chunk the client did not ask for: recorded, not sent.
    forward: bool = True


@dataclass(slots=True, frozen=True)
class Routed:
    """Which deployment answers (`UPSTREAMS`, `service.upstream.router`): the first event of a
    routed stream's first batch, once per stream, never with a single upstream. The relay names
    the deployment in `StreamStarted`, the recorder in the log line, metrics and span."""

    deployment: str
    # The deployment's provider, from the provider table (`openai`, `azure`, `demo`).
    provider: str


UpstreamEvent = TextDelta | ReasoningDelta | Relayed | Finished | UsageReported | Failed | Routed
# What one read from the upstream completed: its events, in order, never none (issue #16). Every
# layer passes a stream on batch by batch, so a read that brings several events becomes one write
# to the client, as a byte relay would write it.
UpstreamBatch = list[UpstreamEvent]


@dataclass(slots=True, frozen=True)
class StreamMetrics:
    """What one stream measured; see `service.metrics` for the definitions."""

    ttft_ms: float | None
    upstream_ttft_ms: float | None
    tokens_per_second: float | None
    output_tokens: int
    duration_ms: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "ttft_ms": self.ttft_ms,
            "upstream_ttft_ms": self.upstream_ttft_ms,
            "tokens_per_second": self.tokens_per_second,
            "output_tokens": self.output_tokens,
            "duration_ms": self.duration_ms,
        }


@dataclass(slots=True, frozen=True)
class StreamStarted:
    stream_id: str
    model: str
    # The deployment that answers, when the service routes over several (`UPSTREAMS`).
    deployment: str | None = None


@dataclass(slots=True, frozen=True)
class StreamEnded:
    finish_reason: str
    usage: Usage | None
    metrics: StreamMetrics


@dataclass(slots=True, frozen=True)
class StreamFailed:
    error: ServiceError


ResponseEvent = StreamStarted | TextDelta | ReasoningDelta | Relayed | StreamEnded | StreamFailed
# The response events of one upstream read (or of the stream's end): one write to the client.
ResponseBatch = list[ResponseEvent]


class ResponseBatches(Protocol):
    """A stream's response batches, read one at a time from one task, and closed (closing the
    upstream request) when its reader is done with it: `service.pipeline.ChatStream`, or a
    resumable stream's follower (an async generator)."""

    def __aiter__(self) -> AsyncIterator[ResponseBatch]: ...

    def __anext__(self) -> Awaitable[ResponseBatch]: ...

    def aclose(self) -> Awaitable[None]: ...
