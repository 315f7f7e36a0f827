"""The React app (`frontend/dist`) in a real browser, on both of its paths, against the service.

The built app is served the way a deployment serves it: nginx with the static files and `/api/`
proxied to the service with the settings of docs/operations.md. Chromium (Debian's, through
Playwright) chats through it; the service talks to the fake upstream, which sees what the model
would see: the history sent, and its client leaving when Stop is pressed. Each test runs on the
fetch path (`POST /api/chat/stream`, `frontend/src/chatStream.ts`) and on the useChat path (the
AI SDK's `useChat`, `POST /api/chat`).

`make test` builds `frontend/dist` first (`make frontend`); run that before this module alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from testkit.browser import save_screenshot
from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, answer_pieces, error_body
from testkit.nginx import NginxFactory
from testkit.services import TEST_KEY, RunningService, ServiceFactory

pytestmark = pytest.mark.timeout(40)

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
DIST = FRONTEND / "dist"
VITEST = FRONTEND / "node_modules" / ".bin" / "vitest"
MODES = ["fetch", "usechat"]

# The web server of the built app: files from dist/ (index.html for any other path), and the
# API proxied with the settings docs/operations.md's "Behind nginx" section recommends.
LOCATIONS = """\
        location / {
            root %(dist)s;
            types { text/html html; text/javascript js; text/css css; application/json map; }
            try_files $uri /index.html;
        }
        location ~ ^/(api/|healthz$) {
            proxy_pass {backend};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_cache off;
            gzip off;
            proxy_read_timeout 75s;
        }"""


@pytest.fixture(scope="module")
def dist() -> Path:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} has no build: run `make frontend` (make test does)")
    return DIST


def serve_app(nginx_factory: NginxFactory, dist: Path, service: RunningService) -> str:
    return nginx_factory(service.host_port[1], locations=LOCATIONS % {"dist": dist})


@pytest.fixture
def app_url(nginx_factory: NginxFactory, dist: Path, service: RunningService) -> str:
    return serve_app(nginx_factory, dist, service)


def open_app(page: Page, app_url: str, mode: str) -> None:
    page.goto(app_url + ("/?mode=usechat" if mode == "usechat" else "/"))
    expect(page.get_by_role("radio", checked=True)).to_have_text(
        "useChat" if mode == "usechat" else "fetch"
    )
    expect(page.get_by_label("Message")).to_be_editable()


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def last_answer(page: Page) -> Locator:
    return page.get_by_test_id("assistant").last


def watch_paints(page: Page) -> None:
    """Records the last answer's text length at every animation frame in which it changed."""
    page.evaluate(
        """() => {
        window.paints = [];
        const tick = () => {
          const answers = document.querySelectorAll('[data-testid=assistant] .markdown');
          const length = answers.length ? answers[answers.length - 1].textContent.length : 0;
          const last = window.paints[window.paints.length - 1];
          if (length && last !== length) window.paints.push(length);
          requestAnimationFrame(tick);
        };
        tick();
      }"""
    )


STORY = [
    "Here ",
    "is ",
    "**bold** ",
    "text, ",
    "then ",
    "code:\n\n",
    "```py\n",
    "print(",
    '"hi")\n',
    "```\n\n",
    *[f"word{i} " for i in range(24)],
]


@pytest.mark.parametrize("mode", MODES)
def test_answer_renders_progressively_with_metrics_and_history_is_sent(
    page: Page, app_url: str, upstream: FakeUpstream, service: RunningService, mode: str
) -> None:
    upstream.queue(
        Reply(pieces=answer_pieces(STORY), pause=0.05),
        Reply(pieces=answer_pieces(["Sure", "."]), pause=0.01),
    )
    open_app(page, app_url, mode)
    watch_paints(page)
    send(page, "Show me some Markdown")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "streaming")
    save_screenshot(page, f"frontend-{mode}-streaming")
    expect(answer).to_have_attribute("data-state", "done")

    paints: list[int] = page.evaluate("window.paints")
    assert len(paints) > 3, f"the answer appeared in {len(paints)} paint(s): {paints}"
    assert paints == sorted(paints), paints
    expect(answer.locator(".markdown strong")).to_have_text("bold")
    expect(answer.locator(".markdown pre code")).to_have_text('print("hi")\n')
    expect(answer).to_contain_text("word23")
    metrics = answer.get_by_test_id("metrics")
    expect(metrics).to_have_attribute("data-final", "true")
    expect(metrics).to_contain_text(f"{len(STORY)} tokens out")
    expect(metrics).to_contain_text("7 in")
    measured = service.wait_for_summaries(1)[0]
    expect(metrics).to_contain_text(f"TTFT {round(measured['ttft_ms'])} ms")
    expect(metrics).to_contain_text(f"{measured['tokens_per_second']:.1f} tok/s")
    save_screenshot(page, f"frontend-{mode}-completed")

    send(page, "Thanks")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page)).to_contain_text("Sure.")
    assert len(upstream.exchanges) == 2
    assert upstream.exchanges[1].json()["messages"] == [
        {"role": "user", "content": "Show me some Markdown"},
        {"role": "assistant", "content": "".join(STORY)},
        {"role": "user", "content": "Thanks"},
    ]


@pytest.mark.parametrize("mode", MODES)
def test_stop_cancels_the_upstream_and_keeps_the_partial_answer(
    page: Page, app_url: str, upstream: FakeUpstream, mode: str
) -> None:
    words = [f"word{i} " for i in range(60)]
    upstream.queue(
        Reply(pieces=answer_pieces(words), pause=0.1),
        Reply(pieces=answer_pieces(["Going", " on."]), pause=0.01),
    )
    open_app(page, app_url, mode)
    send(page, "Tell me a long story")
    answer = last_answer(page)
    expect(answer).to_contain_text("word2 ")
    page.get_by_role("button", name="Stop").click()
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None), (
        "the upstream did not see its client leave"
    )
    assert not upstream.exchanges[0].completed
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer).to_contain_text("Stopped.")
    expect(answer.get_by_test_id("metrics")).to_contain_text("TTFT")  # the browser's own
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    save_screenshot(page, f"frontend-{mode}-stopped")
    partial = answer.locator(".markdown").text_content() or ""
    assert 0 < len(partial.strip()) < len("".join(words).strip())

    send(page, "Go on")
    expect(last_answer(page)).to_contain_text("Going on.")
    sent = upstream.exchanges[1].json()["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"].strip()
    assert "".join(words).startswith(sent[1]["content"])


@pytest.mark.parametrize("mode", MODES)
def test_errors_show_their_message_and_a_retry_recovers(
    page: Page, app_url: str, upstream: FakeUpstream, mode: str
) -> None:
    upstream.queue(
        # Before the first token: an HTTP error whose reason the service passes on (400).
        Reply(
            status=400,
            body=error_body(
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
        ),
        # The upstream fails (503) and then recovers: the service says a retry may help.
        Reply(status=503, body=error_body("overloaded", "server_error")),
        Reply(pieces=answer_pieces(["Back", " again."]), pause=0.01),
        # After the first token: the error arrives in-band; the partial text stays.
        Reply(pieces=[(RECORDINGS / "midstream_error_stream.sse").read_bytes()]),
    )
    open_app(page, app_url, mode)
    send(page, "A very long question")
    alert = last_answer(page).get_by_role("alert")
    expect(alert).to_contain_text("maximum context length is 8192 tokens")
    expect(alert).to_contain_text("upstream_rejected_request")
    expect(alert).to_contain_text("will not help")
    expect(alert.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_label("Message")).to_have_value("A very long question")
    save_screenshot(page, f"frontend-{mode}-error")

    send(page, "Shorter")
    alert = last_answer(page).get_by_role("alert")
    expect(alert).to_contain_text("upstream_unavailable")
    expect(alert).to_contain_text("A retry may help")
    alert.get_by_role("button", name="Retry").click()
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page)).to_contain_text("Back again.")
    # Neither failed question is part of the conversation.
    assert upstream.exchanges[2].json()["messages"] == [{"role": "user", "content": "Shorter"}]

    send(page, "Once more")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "error")
    expect(answer.locator(".markdown")).to_have_text("Partial answer")
    expect(answer.get_by_role("alert")).to_contain_text("the upstream failed mid-stream")
    assert len(upstream.exchanges) == 4


@pytest.mark.parametrize("mode", MODES)
def test_the_app_asks_for_the_api_key_after_a_401(
    page: Page,
    nginx_factory: NginxFactory,
    dist: Path,
    service_factory: ServiceFactory,
    upstream: FakeUpstream,
    mode: str,
) -> None:
    service = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        service_api_keys="react-key-1",
    )
    upstream.queue(Reply(pieces=answer_pieces(["Welcome", " in."]), pause=0.01))
    open_app(page, serve_app(nginx_factory, dist, service), mode)
    expect(page.get_by_label("Service API key")).to_have_count(0)
    send(page, "Hi")
    expect(last_answer(page).get_by_role("alert")).to_contain_text("needs an API key")
    key_field = page.get_by_label("Service API key")
    expect(key_field).to_be_focused()
    assert upstream.exchanges == []

    key_field.fill("react-key-1")
    last_answer(page).get_by_role("button", name="Retry").click()
    expect(last_answer(page)).to_contain_text("Welcome in.")
    assert upstream.exchanges[0].json()["messages"] == [{"role": "user", "content": "Hi"}]
    assert page.evaluate("sessionStorage.getItem('chat.apiKey')") == "react-key-1"


def test_the_ai_sdk_reader_gets_exactly_the_upstream_text_from_the_endpoint(
    service: RunningService, upstream: FakeUpstream
) -> None:
    """`readUIStream` (the `ai` package's parseJsonEventStream + uiMessageChunkSchema +
    readUIMessageStream) run by node against the real `POST /api/chat`."""
    tokens = ["Hel", "lo **wo", "rld** 👋\r\n", '"quoted" 世界 ', "data: [DONE]\n\n", "end"]
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.01))
    environment = {
        **os.environ,
        "CHAT_SERVICE_URL": service.base_url,
        "EXPECTED_TEXT": json.dumps("".join(tokens)),
    }
    if not VITEST.is_file():
        pytest.fail(f"{VITEST} is missing: run `make frontend` (make test does)")
    started = time.monotonic()
    run = subprocess.run(
        [VITEST, "run", "--config", "vitest.live.config.ts"],
        cwd=FRONTEND,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1)}
    assert run.returncode == 0, f"{report}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    assert re.search(r"Tests\s+\S*1 passed", re.sub(r"\x1b\[[0-9;]*m", "", run.stdout)), run.stdout
    assert upstream.exchanges[0].json()["messages"] == [{"role": "user", "content": "Say hello"}]
