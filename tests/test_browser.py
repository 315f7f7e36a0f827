"""The chat page and EventSource in a real browser (chromium), against the fake upstream."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page, Response, expect

from testkit.browser import save_screenshot
from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, answer_pieces
from testkit.services import TEST_KEY, RunningService, ServiceFactory

pytestmark = pytest.mark.timeout(30)

STORY = [f"word{i} " for i in range(40)]


def open_chat(page: Page, service: RunningService) -> None:
    page.goto(service.base_url + "/")
    expect(page.locator("#prompt")).to_be_editable()


def test_answer_streams_in_and_stop_keeps_partial_answer_in_history(
    page: Page, service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(pieces=answer_pieces(STORY), pause=0.09),
        Reply(pieces=answer_pieces(["Sure", ", ", "more."]), pause=0.01),
    )
    open_chat(page, service)
    page.locator("#prompt").fill("Tell me a story")
    page.locator("#prompt").press("Enter")

    answer = page.locator(".message.assistant").last
    text = answer.locator(".content")
    expect(text).not_to_be_empty()
    shown = [text.text_content() or ""]
    for _ in range(2):
        expect(text).not_to_have_text(shown[-1])  # the next piece of the answer is shown
        shown.append(text.text_content() or "")
    lengths = [len(seen) for seen in shown]
    assert lengths == sorted(set(lengths)), f"the answer did not grow while streaming: {lengths}"
    assert not upstream.exchanges[0].completed, "the answer was only shown once it was complete"
    expect(answer.locator(".metrics")).to_contain_text("TTFT")
    save_screenshot(page, "chat-mid-answer")

    page.locator("#stop").click()
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
    assert not upstream.exchanges[0].completed
    expect(answer).to_have_class(re.compile(r"\bstopped\b"))
    expect(answer.locator(".note")).to_have_text(re.compile("stopped", re.IGNORECASE))
    expect(page.locator("#send")).to_be_visible()
    partial = text.text_content() or ""
    assert 0 < len(partial) < len("".join(STORY))
    assert "".join(STORY).startswith(partial)

    page.locator("#prompt").fill("Go on")
    page.locator("#send").click()
    second = page.locator(".message.assistant").nth(1)
    expect(second.locator(".content")).to_have_text("Sure, more.")
    assert len(upstream.exchanges) == 2
    assert upstream.exchanges[1].json()["messages"] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "Go on"},
    ]


def test_completed_answer_shows_text_as_sent_and_metrics(
    page: Page, service: RunningService, upstream: FakeUpstream
) -> None:
    # Newlines must survive, and markup in model text must stay text.
    tokens = ["Two", " lines:", "\n", "<b>not bold</b>", " & ", "done 🎉"]
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.05))
    open_chat(page, service)
    prompt = page.locator("#prompt")
    prompt.press_sequentially("line one")
    prompt.press("Shift+Enter")  # a newline, not a send
    prompt.press_sequentially("line two")
    assert upstream.exchanges == []
    prompt.press("Enter")

    answer = page.locator(".message.assistant").last
    metrics = answer.locator(".metrics")
    expect(metrics).to_have_attribute("data-final", "true")
    assert answer.locator(".content").text_content() == "".join(tokens)
    assert answer.locator(".content b").count() == 0
    assert answer.locator(".content").inner_text() == "".join(tokens)  # pre-wrap keeps "\n"
    # The final figures are the service's own, from the `end` event.
    metrics_text = metrics.text_content() or ""
    shown = re.fullmatch(r"TTFT (\d+) ms · (\d+\.\d) tok/s · (\d+) tokens", metrics_text)
    assert shown, metrics_text
    measured = service.wait_for_summaries(1)[0]
    assert abs(int(shown[1]) - measured["ttft_ms"]) <= 0.5
    assert abs(float(shown[2]) - measured["tokens_per_second"]) <= 0.05
    assert int(shown[3]) == measured["output_tokens"] == len(tokens)
    assert not re.search(r"stopped|error", answer.get_attribute("class") or "")
    expect(page.locator(".message.user .content")).to_have_text("line one\nline two")
    assert upstream.exchanges[0].json()["messages"] == [
        {"role": "user", "content": "line one\nline two"}
    ]
    save_screenshot(page, "chat-completed")


def test_http_error_and_in_band_error_are_shown_in_the_answer(
    page: Page, service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(status=429, headers={"retry-after": "7"}, body=b'{"error":{"message":"slow down"}}'),
        Reply(pieces=[(RECORDINGS / "midstream_error_stream.sse").read_bytes()]),
    )
    open_chat(page, service)
    page.locator("#prompt").fill("Hello")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".message.assistant").last
    expect(answer).to_have_class(re.compile(r"\berror\b"))
    expect(answer.locator(".note")).to_contain_text("rate_limited")
    expect(answer.locator(".note")).to_contain_text("Try again in 7 s")
    # Nothing was answered, so the failed turn is not part of the conversation any more.
    expect(page.locator(".message.user")).to_have_class(re.compile(r"\bdropped\b"))
    expect(page.locator("#prompt")).to_have_value("Hello")  # back in the box, to send again
    save_screenshot(page, "chat-error")

    # After the first token an error arrives in-band: the partial text stays, the error shows.
    page.locator("#prompt").fill("Hello again")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".message.assistant").nth(1)
    expect(answer).to_have_class(re.compile(r"\berror\b"))
    expect(answer.locator(".note")).to_contain_text("upstream_unavailable")
    expect(answer.locator(".content")).to_have_text("Partial answer")
    assert len(upstream.exchanges) == 2
    assert upstream.exchanges[1].json()["messages"] == [{"role": "user", "content": "Hello again"}]


def test_page_asks_for_the_service_api_key_when_one_is_required(
    page: Page, service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    service = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        service_api_keys="browser-key-1",
    )
    upstream.queue(Reply(pieces=answer_pieces(["Welcome", " in."]), pause=0.01))
    open_chat(page, service)
    expect(page.locator("#api-key")).to_be_hidden()
    page.locator("#prompt").fill("Hi")
    page.locator("#prompt").press("Enter")
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".note")).to_contain_text("unauthorized")
    expect(page.locator("#api-key")).to_be_visible()
    assert upstream.exchanges == []

    page.locator("#api-key").fill("browser-key-1")
    expect(page.locator("#prompt")).to_have_value("Hi")
    page.locator("#send").click()
    answer = page.locator(".message.assistant").nth(1)
    expect(answer.locator(".content")).to_have_text("Welcome in.")
    assert upstream.exchanges[0].json()["messages"] == [{"role": "user", "content": "Hi"}]
    assert "browser-key-1" not in str(upstream.exchanges[0].headers)


PARSE_SCRIPT = """
async ([text, sizes]) => {
  const bytes = new TextEncoder().encode(text);
  const stream = new ReadableStream({
    start(controller) {
      for (let offset = 0, i = 0; offset < bytes.length; i += 1) {
        const size = sizes[i % sizes.length];
        controller.enqueue(bytes.slice(offset, offset + size));
        offset += size;
      }
      controller.close();
    },
  });
  const data = [];
  for await (const item of sseData(stream)) data.push(item);
  return data;
}
"""


@pytest.mark.parametrize("sizes", [[1], [1, 7, 3, 13, 2, 29, 5], [100_000]])
def test_page_sse_parser_handles_events_split_across_reads(
    page: Page, service: RunningService, sizes: list[int]
) -> None:
    """The page's own parser (`sseData`), fed reads cut anywhere, even inside an emoji."""
    delta = '{"type":"delta","content":"h\u00e9llo 🎉\\n\\ndata: x"}'
    body = (
        ": ping\n\n"
        "retry: 500\nid: s:0\nevent: start\n"
        'data: {"type":"start","content":""}\n\n'
        f"id: s:1\ndata: {delta}\n\n"
        ": ping\n\n"
        "data: first\ndata:second\n\n"
        "id: s:2\r\ndata: crlf\r\n\r\n"
        "id: s:done\ndata: [DONE]\n\n"
    )
    open_chat(page, service)
    data: list[str] = page.evaluate(PARSE_SCRIPT, [body, sizes])
    assert data == [
        '{"type":"start","content":""}',
        delta,
        "first\nsecond",
        "crlf",
        "[DONE]",
    ]
    assert json.loads(data[1])["content"] == "h\u00e9llo 🎉\n\ndata: x"


EVENT_SOURCE_SCRIPT = """
(url) => {
  const log = { data: [], states: [], opens: 0, errors: 0 };
  const source = new EventSource(url);
  source.onopen = () => { log.opens += 1; log.states.push(source.readyState); };
  source.onmessage = (event) => { log.data.push(event.data); };
  source.onerror = () => { log.errors += 1; log.states.push(source.readyState); };
  window.eventSourceLog = log;
  window.eventSource = source;  // never closed by the page: the server must end it
}
"""


def test_event_source_gets_the_whole_answer_once_and_stops_reconnecting(
    page: Page, service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    retry_ms = 500
    service = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        sse_retry_ms=retry_ms,
    )
    tokens = ["Hi", " there", ",", " friend", "!"]
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.02))
    # A second reply, so that an unwanted second generation would succeed and be seen.
    upstream.queue(Reply(pieces=answer_pieces(["again"]), pause=0.02))
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if "/api/chat/stream" in r.url else None)
    open_chat(page, service)

    page.evaluate(EVENT_SOURCE_SCRIPT, "/api/chat/stream?message=hi")
    page.wait_for_function("window.eventSourceLog.data.includes('[DONE]')")
    # The browser reconnects `retry_ms` after the stream ended: wait for the answer to that,
    # and for the EventSource to be closed for good (or to have opened a second stream).
    with page.expect_response(lambda response: "/api/chat/stream" in response.url):
        page.wait_for_function(
            "window.eventSource.readyState === EventSource.CLOSED"
            " || window.eventSourceLog.opens > 1"
        )

    log: dict[str, Any] = page.evaluate("window.eventSourceLog")
    statuses = [r.status for r in responses]
    assert len(upstream.exchanges) == 1, f"generated again; responses: {statuses}, log: {log}"
    assert upstream.exchanges[0].json()["messages"] == [{"role": "user", "content": "hi"}]
    # It reconnected once, saying it had everything (Last-Event-ID ...:done); the 204 ended it.
    assert statuses == [200, 204], log
    last_event_id = responses[1].request.header_value("last-event-id") or ""
    assert last_event_id.endswith(":done")
    assert page.evaluate("window.eventSource.readyState") == 2  # EventSource.CLOSED
    assert log["states"] == [1, 0, 2]  # OPEN, then CONNECTING (stream ended), then CLOSED
    data: list[str] = log["data"]
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(item)["content"] for item in data[:-1]) == "".join(tokens)
