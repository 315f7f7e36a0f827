"""The `end` event's metrics and the per-stream log line agree with what the upstream sent."""

from __future__ import annotations

import time

import pytest

from service.events import TextDelta
from service.metrics import StreamRecorder
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.services import RunningService
from testkit.sse_client import stream_chat

FIRST_TOKEN_DELAY = 0.3
TOKEN_PAUSE = 0.05
TOKENS = [f" w{i}" for i in range(11)]


def test_end_event_metrics_match_paced_upstream(
    service: RunningService, upstream: FakeUpstream
) -> None:
    # Pieces: role chunk, 11 tokens, finish, usage, [DONE]; the pause between each two.
    upstream.queue(
        Reply(
            pieces=answer_pieces(TOKENS), delay_before_headers=FIRST_TOKEN_DELAY, pause=TOKEN_PAUSE
        )
    )
    _, events = stream_chat(service.base_url, {"prompt": "hi"})

    end = events[-2].json()
    metrics = end["metrics"]
    assert end["usage"] == {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
    assert metrics["output_tokens"] == 11
    # First token after the header delay plus one pause (the role chunk comes first).
    assert metrics["ttft_ms"] >= (FIRST_TOKEN_DELAY + TOKEN_PAUSE) * 1000
    assert metrics["ttft_ms"] < (FIRST_TOKEN_DELAY + TOKEN_PAUSE) * 1000 + 1000
    assert metrics["upstream_ttft_ms"] <= metrics["ttft_ms"]
    # 10 intervals of 50 ms between the first and the last token: 20 tokens/s.
    assert metrics["tokens_per_second"] == pytest.approx(1 / TOKEN_PAUSE, rel=0.35)
    assert metrics["duration_ms"] >= metrics["ttft_ms"] + 10 * TOKEN_PAUSE * 1000

    summary = service.wait_for_summaries(1)[0]
    assert summary["outcome"] == "completed"
    assert summary["finish_reason"] == "stop"
    assert summary["output_tokens"] == 11
    assert summary["delivered_text_deltas"] == 11
    assert summary["ttft_ms"] == metrics["ttft_ms"]
    assert summary["provider"] == "openai"


def test_without_usage_tokens_are_counted(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS[:4], usage=False)))
    _, events = stream_chat(service.base_url, {"prompt": "hi"})
    end = events[-2].json()
    assert end["usage"] is None
    assert end["metrics"]["output_tokens"] == 4


def test_log_line_carries_no_prompt_or_answer(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" secret-answer-text"])))
    stream_chat(service.base_url, {"prompt": "secret-prompt-text"})
    summary = service.wait_for_summaries(1)[0]
    assert "secret-prompt-text" not in repr(summary)
    assert "secret-answer-text" not in repr(summary)


def test_tokens_of_one_read_share_its_time_and_give_no_rate_alone() -> None:
    recorder = StreamRecorder(stream_id="s", model="m", provider="p", received_at=0.0)
    recorder.record([TextDelta("a"), TextDelta("b"), TextDelta("c")])
    assert recorder.text_deltas == 3
    assert recorder.first_text_at == recorder.last_text_at
    assert recorder.decode() is None  # nothing tells tokens of one read apart
    time.sleep(0.01)
    recorder.record([TextDelta("d")])
    decode = recorder.decode()
    assert decode is not None
    assert decode[1] == 3  # three tokens after the first, over the time between the reads
    assert decode[0] >= 0.01
