"""The documentation's examples, run against a running service (issue #18): a page cannot
show a command whose output the service no longer gives.

Every shell, Python and JavaScript block in README.md and docs/ is marked
(`testkit.doc_examples`): `<!-- example: NAME -->` blocks run here, `<!-- not-run: REASON -->`
blocks say why not, and an unmarked one fails `test_every_block_is_marked`. Each example runs
as it is written, with `http://127.0.0.1:8000` replaced by the address of a service started for
it (the demo model, paced fast), and `EXAMPLES[NAME]` checks what it printed, not just its exit
code: the answer's text against the demo model's answer to the same question, the events, the
end marker. Shell blocks run in bash, Python blocks in this interpreter (the `openai` package is
a dependency), `js` blocks either in Node with the `openai` npm package of tests/node or in
Chromium on a page of the service's origin, as they would in an app.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page

from testkit.doc_examples import ROOT, Block, blocks, unmarked
from testkit.ports import LOOPBACK, free_port
from testkit.redis_server import RedisServer
from testkit.service_process import service_env, stop_process
from testkit.services import RunningService, ServiceFactory
from testkit.waiting import wait_until

SERVICE_ADDRESS = "http://127.0.0.1:8000"
# The demo model, fast: the examples wait for whole answers.
FAST_DEMO = {"demo_tokens_per_second": 2000.0, "demo_first_token_delay_seconds": 0.0}
NODE_PACKAGES = ROOT / "tests" / "node"
RUN_TIMEOUT_SECONDS = 30

Runner = Literal["shell", "python", "node", "browser", "server"]
Check = Callable[[str, RunningService], None]


@dataclass(frozen=True)
class Example:
    """How to run one named example and what its output must be (a `server` example, a
    command that starts the service, is checked by `test_server_example` itself)."""

    check: Check | None = None
    runner: Runner = "shell"
    settings: dict[str, Any] = field(default_factory=dict)
    redis: bool = False  # the service gets a fresh redis-server's REDIS_URL
    before: Callable[[RunningService], None] | None = None


# -- what the service says, asked directly --------------------------------------------------


def demo_answer(service: RunningService, body: dict[str, Any], **headers: str) -> str:
    """The demo model's whole answer to `body`, in plain text."""
    response = httpx.post(
        service.base_url + "/api/chat/stream?format=text", json=body, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.text


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE body: each one's fields (`id`, `event`, `data`, `retry`)."""
    events = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        fields = {}
        for line in chunk.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


def data_of(events: list[dict[str, str]]) -> list[Any]:
    """Each event's `data` as JSON, up to (without) `[DONE]`, which must come last."""
    assert events, "no events"
    assert events[-1].get("data") == "[DONE]", f"the stream does not end with [DONE]: {events[-1]}"
    return [json.loads(event["data"]) for event in events[:-1] if "data" in event]


# -- the checks, one per example name -------------------------------------------------------


def native_stream(question: str, **body: Any) -> Check:
    """A native SSE stream: `start` from the demo model, the demo's whole answer to `question`
    in `delta`s, an `end` that finished with `stop` and has metrics, then `[DONE]`."""

    def check(output: str, service: RunningService) -> None:
        events = sse_events(output)
        messages = data_of(events)
        assert events[0]["event"] == "start"
        assert messages[0]["model"] == "demo"
        text = "".join(m["content"] for m in messages if m["type"] == "delta")
        assert text == demo_answer(service, {"message": question, **body})
        assert messages[-1]["type"] == "end"
        assert events[-2]["event"] == "end"
        assert messages[-1]["finish_reason"] == "stop"
        assert messages[-1]["metrics"]["ttft_ms"] > 0

    return check


def check_formats(output: str, service: RunningService) -> None:
    expected = demo_answer(service, {"message": "Hi"})
    cut = output.index("\n", output.index('{"type":"end"')) + 1
    ndjson, text = output[:cut], output[cut:]
    lines = [json.loads(line) for line in ndjson.splitlines()]
    assert [line["type"] for line in lines[:1] + lines[-1:]] == ["start", "end"]
    assert "".join(line["content"] for line in lines) == expected
    assert text == expected


def check_use_chat(output: str, service: RunningService) -> None:
    chunks = data_of(sse_events(output))
    assert [chunk["type"] for chunk in chunks[:3]] == ["start", "start-step", "text-start"]
    deltas = "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")
    assert deltas == demo_answer(service, {"message": "Hi"})
    assert [chunk["type"] for chunk in chunks[-3:]] == ["text-end", "finish-step", "finish"]
    assert chunks[-1]["finishReason"] == "stop"
    assert "ttft_ms" in chunks[-1]["messageMetadata"]


def check_openai_stream(output: str, service: RunningService) -> None:
    chunks = data_of(sse_events(output))
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text == demo_answer(service, {"message": "Hi"})
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def check_openai_python(output: str, service: RunningService) -> None:
    # The chat completion's text, then the Responses API's: the same canned answer twice.
    assert output == demo_answer(service, {"message": "Hello!"}) * 2


def check_openai_node(output: str, service: RunningService) -> None:
    assert output == demo_answer(service, {"message": "Hello!"})


def stream_once(service: RunningService) -> None:
    demo_answer(service, {"message": "Hello!"})


def check_metrics(output: str, service: RunningService) -> None:
    lines = output.splitlines()
    assert lines, "grep found nothing"
    shown = r"(llm_streams_total|gen_ai_server_time_to_first_token_seconds_(sum|count))\{"
    assert all(re.match(shown, line) for line in lines), output
    completed = [
        x for x in lines if x.startswith("llm_streams_total{") and 'outcome="completed"' in x
    ]
    assert completed, output
    assert float(completed[0].rsplit(" ", 1)[1]) >= 1, output
    assert any(x.startswith("gen_ai_server_time_to_first_token_seconds_count{") for x in lines)


def check_healthz(output: str, service: RunningService) -> None:
    assert json.loads(output) == {"status": "ok", "provider": "demo", "model": "demo", "demo": True}


def check_unknown_field(output: str, service: RunningService) -> None:
    error = json.loads(output)["error"]
    assert error["type"] == "invalid_request"
    assert error["message"] == "temprature: Extra inputs are not permitted"


def check_limit(output: str, service: RunningService) -> None:
    error = json.loads(output)["error"]
    assert error["type"] == "invalid_request"
    assert error["message"] == "max_tokens: at most 16384 (MAX_OUTPUT_TOKENS), got 100000"


def check_auth(output: str, service: RunningService) -> None:
    refused, *answer = output.splitlines()
    assert refused == "401"
    assert answer[0] == "data: [DONE]", output


def check_resume(output: str, service: RunningService) -> None:
    # The first request prints what came within its second, the second the whole answer.
    whole = demo_answer(service, {"message": "Hello!"})
    assert output.endswith(whole), output
    partial = output.removesuffix(whole)
    assert partial, "the first request printed nothing within its second"
    assert whole.startswith(partial), (partial, whole)
    assert partial != whole, "the first request was not cut: the answer came within a second"


def check_browser_fetch(output: str, service: RunningService) -> None:
    seen = json.loads(output)
    answer = demo_answer(service, {"message": "Hello!"})
    assert seen["text"] == answer
    assert seen["history"] == [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": answer},
    ]
    # console.log(finish_reason, usage, ttft_ms, tokens_per_second, output_tokens) at `end`
    (logged,) = seen["console"]
    assert logged[0] == "stop"
    assert logged[1]["completion_tokens"] > 0
    assert logged[2] > 0


def check_browser_eventsource(output: str, service: RunningService) -> None:
    seen = json.loads(output)
    assert seen["text"] == demo_answer(service, {"message": "Hello!"})
    (logged,) = seen["console"]  # the `end` event's metrics
    assert logged[0]["ttft_ms"] > 0
    assert logged[0]["output_tokens"] > 0


# docs/upstreams.md: two deployments of the demo model stand in for two Azure regions.
TWO_DEMO_REGIONS = {
    "upstreams": json.dumps(
        [{"name": "eastus", "provider": "demo"}, {"name": "swedencentral", "provider": "demo"}]
    )
}


def check_upstreams_start(output: str, service: RunningService) -> None:
    (line,) = output.splitlines()
    start = json.loads(line.removeprefix("data: "))
    assert start["type"] == "start"
    assert start["deployment"] in ("eastus", "swedencentral")


def check_upstreams_metrics(output: str, service: RunningService) -> None:
    lines = output.splitlines()
    requests = [line for line in lines if line.startswith("llm_upstream_requests_total{")]
    assert len(requests) == 1, output  # the one stream, to one of the two
    states = {line for line in lines if line.startswith("llm_upstream_deployment_state{")}
    assert states == {
        f'llm_upstream_deployment_state{{deployment="{name}",state="healthy"}} 1.0'
        for name in ("eastus", "swedencentral")
    }, output


EXAMPLES: dict[str, Example] = {
    "first-request": Example(native_stream("Hello!")),
    "conversation": Example(native_stream("What is SSE?", max_tokens=200)),
    "formats": Example(check_formats),
    "use-chat-stream": Example(check_use_chat),
    "openai-curl": Example(check_openai_stream),
    "openai-python": Example(check_openai_python, runner="python"),
    "openai-node": Example(check_openai_node, runner="node"),
    "browser-fetch": Example(check_browser_fetch, runner="browser"),
    "browser-eventsource": Example(check_browser_eventsource, runner="browser"),
    "healthz": Example(check_healthz),
    "unknown-field": Example(check_unknown_field),
    "limit": Example(check_limit),
    "metrics": Example(check_metrics, before=stream_once),
    "auth": Example(check_auth, settings={"service_api_keys": "key1,key2"}),
    # Paced so that the answer takes longer than the example's one-second cut.
    "resume-text": Example(check_resume, settings={"demo_tokens_per_second": 40.0}, redis=True),
    "uvicorn": Example(runner="server"),
    "upstreams-start": Example(check_upstreams_start, settings=TWO_DEMO_REGIONS),
    "upstreams-metrics": Example(
        check_upstreams_metrics, settings=TWO_DEMO_REGIONS, before=stream_once
    ),
}

FOUND = blocks()
RUN = [block for block in FOUND if block.example]


def examples_run_by(runner: Runner) -> list[Any]:
    chosen = [b for b in RUN if b.example in EXAMPLES and EXAMPLES[b.example].runner == runner]
    return [pytest.param(block, id=f"{block.example}@{block.where}") for block in chosen]


# -- the inventory: no test server needed ---------------------------------------------------


def test_every_block_is_marked() -> None:
    wrong = [f"{block.where} ({block.language})" for block in unmarked(FOUND)]
    assert not wrong, (
        "shell, Python and JavaScript blocks need <!-- example: NAME --> (tested here) or "
        "<!-- not-run: REASON --> on the line before their fence; TypeScript blocks must be "
        f"--8<-- includes of the tested frontend sources: {wrong}"
    )


def test_every_example_has_a_check_and_every_check_an_example() -> None:
    named = {block.example for block in RUN}
    assert not named - EXAMPLES.keys(), f"examples without a check here: {named - EXAMPLES.keys()}"
    assert not EXAMPLES.keys() - named, f"checks whose example is gone: {EXAMPLES.keys() - named}"


def test_the_readme_example_is_tested() -> None:
    assert any(block.path == "README.md" for block in RUN), "README.md's curl example is not run"


# Issue #18: the README is the front page, short; the details are in docs/.
README_MAX_LINES = 250
_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
# A target is `<in angle brackets>` (it may hold spaces) or runs to the first space or `)`.
_INLINE_LINK = re.compile(r"\]\(\s*(?:<([^>]+)>|([^)\s]+))[^)]*\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?:<([^>]+)>|(\S+))", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def relative_links(markdown: str) -> list[str]:
    """The targets of a Markdown text's links (inline and reference definitions, outside code
    blocks) that name a path in the repository: no scheme (`https:`, `mailto:`), no bare
    `#anchor`; each without its `#fragment`."""
    text = _FENCE.sub("", markdown)
    found = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    targets = [bracketed or bare for bracketed, bare in found]
    return [
        target.split("#", 1)[0]
        for target in targets
        if not _SCHEME.match(target) and not target.startswith("#")
    ]


def test_the_link_reader_finds_relative_links_and_only_those() -> None:
    text = (
        '[a](docs/a.md) [b](<docs/b c.md> "title") [c](https://x.org/d.md) [d](#top) '
        "<http://127.0.0.1:8000/> [e](docs/e.md#part)\n"
        "```sh\n[f](in-a-fence.md)\n```\n"
        "[g]: LICENSE\n[h]: mailto:someone@example.org\n"
    )
    assert relative_links(text) == ["docs/a.md", "docs/b c.md", "docs/e.md", "LICENSE"]


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, over {README_MAX_LINES}: move details to docs/"
    )
    links = relative_links(text)
    assert "docs/upstreams.md" in links  # the reader sees the README's links at all
    missing = sorted({link for link in links if not (readme.parent / link).exists()})
    assert not missing, f"README.md links to paths that do not exist: {missing}"


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, id=b.where)
        for b in RUN
        if b.example in EXAMPLES and EXAMPLES[b.example].runner in ("shell", "python", "node")
    ],
)
def test_examples_call_the_service_at_its_documented_address(block: Block) -> None:
    """The address is what the tests replace: an example naming another would run against
    whatever listens there, not the service started for it."""
    assert SERVICE_ADDRESS in block.code
    assert not re.search(r"(localhost|127\.0\.0\.1):(?!8000\b)\d+", block.code), block.code


# -- running them ----------------------------------------------------------------------------


def start_for(
    block: Block, service_factory: ServiceFactory, request: pytest.FixtureRequest
) -> tuple[Example, RunningService]:
    assert block.example is not None
    example = EXAMPLES[block.example]
    settings = {**FAST_DEMO, **example.settings}
    if example.redis:
        redis: RedisServer = request.getfixturevalue("redis_server")
        settings["redis_url"] = redis.url
    service = service_factory(**settings)
    if example.before is not None:
        example.before(service)
    return example, service


def run(command: list[str], code: str, cwd: Path) -> str:
    finished = subprocess.run(
        command,
        input=code,
        cwd=cwd,
        env=service_env(NO_PROXY=LOOPBACK, no_proxy=LOOPBACK),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, (
        f"exit {finished.returncode}\n{finished.stdout}\n{finished.stderr}"
    )
    return finished.stdout


@pytest.mark.parametrize("block", examples_run_by("shell"))
def test_shell_example(
    block: Block, service_factory: ServiceFactory, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    example, service = start_for(block, service_factory, request)
    code = block.code.replace(SERVICE_ADDRESS, service.base_url)
    output = run(["bash", "-euo", "pipefail"], code, tmp_path)
    assert example.check is not None
    example.check(output, service)


@pytest.mark.parametrize("block", examples_run_by("python"))
def test_python_example(
    block: Block, service_factory: ServiceFactory, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    example, service = start_for(block, service_factory, request)
    code = block.code.replace(SERVICE_ADDRESS, service.base_url)
    assert example.check is not None
    example.check(run([sys.executable, "-"], code, tmp_path), service)


@pytest.mark.parametrize("block", examples_run_by("node"))
def test_node_example(
    block: Block, service_factory: ServiceFactory, request: pytest.FixtureRequest
) -> None:
    assert (NODE_PACKAGES / "node_modules" / "openai").is_dir(), (
        "the openai npm package is not installed: `make test` runs `npm ci` in tests/node"
    )
    example, service = start_for(block, service_factory, request)
    code = block.code.replace(SERVICE_ADDRESS, service.base_url)
    # From stdin as a module, in tests/node, so that `import "openai"` finds its package.
    assert example.check is not None
    example.check(run(["node", "--input-type=module"], code, NODE_PACKAGES), service)


@pytest.mark.parametrize("block", examples_run_by("browser"))
def test_browser_example(
    block: Block, service_factory: ServiceFactory, request: pytest.FixtureRequest, page: Page
) -> None:
    """The block runs as a page's script would, on the service's origin (relative URLs, as in
    the docs), with an `output` element to write to; the harness waits for the answer to end
    (`ask` resolves, or the `EventSource` is closed) and returns what the page shows."""
    example, service = start_for(block, service_factory, request)
    logged: list[ConsoleMessage] = []
    page.on("console", lambda message: logged.append(message) if message.type == "log" else None)
    page.goto(service.base_url + "/healthz")
    finish = {
        "browser-fetch": (
            'await ask("Hello!", output); return { text: output.textContent, history };'
        ),
        "browser-eventsource": (
            "await new Promise((resolve) => { const timer = setInterval(() => {"
            " if (source.readyState === EventSource.CLOSED) { clearInterval(timer); resolve(); }"
            " }, 20); });"
            " return { text: output.textContent };"
        ),
    }[str(block.example)]
    seen = page.evaluate(
        "async () => {\n"
        'const output = document.createElement("pre"); document.body.append(output);\n'
        f"{block.code}\n{finish}\n}}"
    )
    seen["console"] = [[arg.json_value() for arg in message.args] for message in logged]
    assert example.check is not None
    example.check(json.dumps(seen), service)


@pytest.mark.server
@pytest.mark.parametrize("block", examples_run_by("server"))
def test_server_example(block: Block, tmp_path: Path) -> None:
    """A command that starts the service: run on a free loopback port instead of 0.0.0.0, in
    an empty directory (no `.env`), then checked for what the page says it gives: the demo
    model answering, and the request head limits of `service.asgi:http_protocol` (431)."""
    command = shlex.split(block.code.replace("0.0.0.0", LOOPBACK))
    port = free_port()
    bin_directory = Path(sys.executable).parent
    env = service_env(PATH=f"{bin_directory}{os.pathsep}{os.environ.get('PATH', '')}")
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://{LOOPBACK}:{port}"
    try:
        assert wait_until(lambda: _answers(base_url) or process.poll() is not None, 20)
        assert process.poll() is None, process.communicate()[0]
        assert httpx.get(base_url + "/healthz").json()["provider"] == "demo"
        answer = httpx.post(
            base_url + "/api/chat/stream?format=text", json={"message": "Hi"}, timeout=30
        )
        assert answer.status_code == 200
        assert answer.text.startswith('You asked: "Hi".')
        too_big = httpx.get(base_url + "/healthz", headers={"X-Padding": "x" * 70_000})
        assert too_big.status_code == 431, too_big.text
        assert too_big.json()["error"]["type"] == "request_head_too_large"
    finally:
        stop_process(process)
        process.communicate()


def _answers(base_url: str) -> bool:
    try:
        httpx.get(base_url + "/healthz", timeout=2)
    except httpx.TransportError:
        return False
    return True
