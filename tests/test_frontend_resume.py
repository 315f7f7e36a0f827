"""The React app's useChat path with resumable streams (issue 13) in Chromium: the built app
served by nginx in front of two replicas that share Debian's redis-server (`REDIS_URL`), as in
docs/operations.md, "Resumable streams with Redis".

- A reload mid-answer only starts the service's grace period; the reloaded page finds its chat
  (id and messages in `sessionStorage`), `useChat({resume: true})` asks
  `GET /api/chat/{chat_id}/stream`, and the page shows exactly the whole answer while the fake
  upstream saw one request.
- Stop sends `POST /api/chat/{chat_id}/stop` besides aborting the fetch, so the upstream sees its
  client leave at once, not after `RESUME_GRACE_SECONDS` (30 s here).

`make test` builds `frontend/dist` first (`make frontend`); run that before this module alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from testkit.browser import save_screenshot
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.nginx import NginxProxy
from tests.test_frontend_browser import LOCATIONS, dist, last_answer, open_app, send
from tests.test_resume import ResumingFactory, resuming

__all__ = ["dist", "resuming"]  # fixtures, imported so that pytest finds them in this module

pytestmark = pytest.mark.timeout(60)

GRACE_SECONDS = 30.0
WORDS = [f"word{i} " for i in range(60)]
ANSWER = "".join(WORDS).strip()
PAUSE = 0.05  # ~3 s for the whole answer


@pytest.fixture
def app_url(resuming: ResumingFactory, dist: Path, tmp_path: Path) -> Iterator[str]:
    """The built app from nginx, `/api/` balanced round-robin over two replicas on one redis."""
    replicas = [resuming(resume_grace_seconds=GRACE_SECONDS) for _ in range(2)]
    ports = [replica.host_port[1] for replica in replicas]
    nginx = NginxProxy.start(
        ports[0],
        more_backends=ports[1:],
        locations=LOCATIONS % {"dist": dist},
        directory=tmp_path / "nginx",
    )
    try:
        yield nginx.base_url
    finally:
        nginx.stop()


def test_a_reload_mid_answer_resumes_the_whole_answer_from_one_upstream_request(
    page: Page, app_url: str, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(WORDS), pause=PAUSE))
    open_app(page, app_url, "usechat")
    send(page, "Tell me a long story")
    expect(last_answer(page)).to_contain_text("word3 ")
    page.reload()

    answer = last_answer(page)
    expect(answer.locator(".markdown")).to_have_text(ANSWER, timeout=20_000)
    expect(answer).to_have_attribute("data-state", "done")
    save_screenshot(page, "frontend-usechat-resumed")
    expect(page.get_by_test_id("assistant")).to_have_count(1)
    expect(page.get_by_text("Tell me a long story")).to_be_visible()  # the question, kept
    assert len(upstream.exchanges) == 1
    # The answer can be on screen before the fake upstream, in its own thread, records that it
    # wrote the body's end (a CI flake at stop 22, when it also paused after [DONE]).
    assert upstream.wait_for(lambda: upstream.exchanges[0].completed)
    assert upstream.exchanges[0].disconnected_at is None


def test_stop_with_redis_ends_the_generation_at_once_not_after_the_grace_period(
    page: Page, app_url: str, upstream: FakeUpstream
) -> None:
    long_answer = [f"w{i} " for i in range(400)]  # 20 s unless stopped
    upstream.queue(Reply(pieces=answer_pieces(long_answer), pause=PAUSE))
    open_app(page, app_url, "usechat")
    send(page, "Tell me a very long story")
    answer = last_answer(page)
    expect(answer).to_contain_text("w2 ")
    pressed = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None, 15), (
        "the upstream did not see its client leave"
    )
    left = upstream.exchanges[0].disconnected_at
    assert left is not None
    assert left - pressed < GRACE_SECONDS / 3, left - pressed
    assert not upstream.exchanges[0].completed
    expect(answer).to_have_attribute("data-state", "stopped")
    # And a reload finds nothing to resume: the stopped answer stays as it was.
    partial = answer.locator(".markdown").text_content()
    page.reload()
    expect(page.get_by_label("Message")).to_be_editable()
    time.sleep(1)  # time for a resume that should not happen to show
    assert last_answer(page).locator(".markdown").text_content() == partial
    assert len(upstream.exchanges) == 1
