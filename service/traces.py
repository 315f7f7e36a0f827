"""Optional traces: one OpenTelemetry span per stream, in the GenAI conventions (issue #10).

Imported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`service.app`): without it, neither the
OpenTelemetry SDK nor its exporter is loaded, and streams cost nothing more. With it, every
stream becomes one `CLIENT` span named `chat {model}`, from the request received to the stream's
end, built once when the stream has ended from its `StreamRecorder` (nothing per token), and sent
in batches over OTLP/HTTP (`{endpoint}/v1/traces`; the SDK's other `OTEL_*` variables, such as
`OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_BSP_SCHEDULE_DELAY`, apply):
https://github.com/open-telemetry/semantic-conventions/blob/v1.41.0/docs/gen-ai/gen-ai-spans.md

The conventions' attributes: `gen_ai.operation.name`, `gen_ai.provider.name`,
`gen_ai.request.model`, `gen_ai.request.stream`, `gen_ai.response.finish_reasons`,
`gen_ai.response.time_to_first_chunk`, `gen_ai.usage.*`, `error.type` (streams ending in error,
whose status is ERROR); the service's own, `llm_stream.*`, add the stream's id, outcome, format
and, with `UPSTREAMS`, the deployment that answered. Time to first token is the event
`gen_ai.first_token` at the moment the first text was handed to the client. No prompt or answer
text is recorded.
"""

from __future__ import annotations

import os
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from service.metrics import StreamRecorder
from service.prometheus_metrics import OPERATION, gen_ai_provider_name

SERVICE_NAME = "llm-stream-service"
FIRST_TOKEN_EVENT = "gen_ai.first_token"  # noqa: S105 (an event name, not a secret)


class StreamSpans:
    """A `StreamObserver` that exports a span per stream. Its own tracer provider (the global
    one is left alone); `shutdown` sends what is still batched."""

    def __init__(self, endpoint: str) -> None:
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)}
        )
        self._provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("service.traces")

    def stream_opened(self, recorder: StreamRecorder) -> None:
        pass

    def stream_finished(self, recorder: StreamRecorder) -> None:
        assert recorder.ended_at is not None
        # perf_counter instants to the epoch nanoseconds spans carry.
        offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)

        def epoch_ns(instant: float) -> int:
            return offset_ns + int(instant * 1e9)

        span = self._tracer.start_span(
            f"{OPERATION} {recorder.model}",
            kind=SpanKind.CLIENT,
            start_time=epoch_ns(recorder.received_at),
            attributes=_attributes(recorder),
        )
        if recorder.first_text_at is not None:
            span.add_event(
                FIRST_TOKEN_EVENT,
                {
                    "gen_ai.server.time_to_first_token": recorder.first_text_at
                    - recorder.received_at
                },
                timestamp=epoch_ns(recorder.first_text_at),
            )
        if recorder.outcome == "error":
            span.set_status(Status(StatusCode.ERROR, recorder.error_type))
        span.end(end_time=epoch_ns(recorder.ended_at))

    def shutdown(self) -> None:
        self._provider.shutdown()


def _attributes(recorder: StreamRecorder) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": gen_ai_provider_name(recorder.provider),
        "gen_ai.request.model": recorder.model,
        # Every route streams, except the OpenAI passthrough when a client asks for one answer.
        "gen_ai.request.stream": recorder.wire_format != "openai-json",
        "http.route": recorder.endpoint,
        "llm_stream.id": recorder.stream_id,
        "llm_stream.outcome": recorder.outcome or "error",
        "llm_stream.format": recorder.wire_format,
    }
    if recorder.deployment is not None:  # with UPSTREAMS: the deployment that answered
        attributes["llm_stream.deployment"] = recorder.deployment
    if recorder.finish_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = [recorder.finish_reason]
    if recorder.first_text_at is not None and recorder.upstream_started_at is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = (
            recorder.first_text_at - recorder.upstream_started_at
        )
    if recorder.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = recorder.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = recorder.usage.completion_tokens
        if recorder.usage.reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = recorder.usage.reasoning_tokens
    if recorder.outcome == "error" and recorder.error_type:
        attributes["error.type"] = recorder.error_type
    return attributes
