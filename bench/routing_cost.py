"""What routing over several deployments (`UPSTREAMS`, issue #17) costs, and how long a failover
takes.

    python -m bench.routing_cost                     # every part
    python -m bench.routing_cost inprocess|request|burst|failover ...

1. `inprocess`: the router's own CPU per request, in this process and nothing else: a stream
   opened, read to its end and recorded by `ChatService` (deadline watch, relay, recorder, as
   every request is), over an in-memory upstream called directly, and over the router with two
   in-memory deployments and its Prometheus instruments. No network, no event loop wake-ups:
   the difference is the router's alone (issue #17's goal: under 50 µs).
2. `request`: the service's CPU per request end to end, 1-token answers in a row, three
   `python -m service` processes taking turns: one plain upstream (`OPENAI_BASE_URL`), and
   `UPSTREAMS` of two healthy deployments, on that same upstream server and on two; both
   routes. On a shared 2-core machine whole-service figures swing by several percent between
   runs: the spread is printed, and each routed run's difference to the plain run beside it.
3. `burst`: CPU per relayed token, 20,000 tokens at once, plain against routed: after the first
   batch the router hands out the deployment's own generator, one method call per batch.
4. `failover`: time to first token when the first deployment fails (a closed port; a 503)
   and the second answers, against the healthy one through a plain service; beside it the
   failing deployment's own refusal time, a plain service pointed at it answering 502. Every
   request fails over (cooldowns of a millisecond: each request probes the failing deployment
   first), and `/metrics` is checked to say so. The goal: failover adds less than that refusal
   time plus 1 ms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import httpx
import uvloop
from prometheus_client import CollectorRegistry

from bench.processes import process_cpu_seconds
from bench.relay_overhead import NATIVE, PASSTHROUGH, ROUTES, Route
from bench.upstream_server import UpstreamProcess
from service.chat import ChatService
from service.deployment_metrics import DeploymentMetrics
from service.domain import ChatMessage, CompletionParams, PassthroughParams, StreamRequest
from service.events import Finished, TextDelta, UpstreamBatch, Usage, UsageReported
from service.upstream.base import ChatUpstream
from service.upstream.health import CooldownPolicy, DeploymentHealth
from service.upstream.router import Lane, Router
from testkit.ports import free_port, port_of
from testkit.service_process import start_service_process, stop_process
from testkit.services import make_settings

# -- 1. in process ---------------------------------------------------------------------------


class MemoryUpstream:
    """A `ChatUpstream` answering at once from memory: one token, then finish and usage."""

    provider = "openai"
    is_demo = False

    def resolve_model(self, requested: str | None) -> str:
        return requested or "bench"

    def startup_notice(self) -> tuple[int, str]:
        return logging.INFO, "in memory"

    async def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]:
        yield [TextDelta(" w")]
        yield [Finished("stop"), UsageReported(Usage(1, 1, 2))]

    def passthrough(self, params: PassthroughParams) -> AsyncGenerator[UpstreamBatch, None]:
        raise NotImplementedError

    async def list_models(self) -> list[dict[str, Any]]:
        return []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def memory_router() -> Router:
    """The router over two in-memory deployments, instrumented as the service instruments it."""
    entries = [{"name": name, "base_url": "http://127.0.0.1:9/v1"} for name in ("a", "b")]
    settings = make_settings(upstreams=json.dumps(entries))
    metrics = DeploymentMetrics(CollectorRegistry(), ["a", "b"])
    policy = CooldownPolicy(5, 300)
    lanes = [
        Lane(deployment, MemoryUpstream(), DeploymentHealth(deployment.name, policy, metrics))
        for deployment in settings.deployments
    ]
    return Router(lanes, "bench", metrics)


async def requests_in_process(upstream: ChatUpstream, count: int) -> float:
    """CPU seconds per request: opened, read to the end and recorded, `count` times."""
    chat = ChatService(make_settings(), upstream)
    request = StreamRequest((ChatMessage("user", "bench"),))
    started = time.process_time()
    for _ in range(count):
        opened = chat.open_stream(request, received_at=time.perf_counter(), endpoint="/bench")
        async for _ in opened.events:
            pass
        opened.recorder.finish("delivered")
    return (time.process_time() - started) / count


async def in_process(requests: int = 20_000, runs: int = 7) -> None:
    logging.getLogger("service").setLevel(logging.WARNING)  # no log line per request
    plain: ChatUpstream = MemoryUpstream()
    routed: ChatUpstream = memory_router()
    samples: dict[str, list[float]] = {"plain": [], "routed": []}
    for _ in range(runs):
        for name, upstream in (("plain", plain), ("routed", routed)):
            samples[name].append(await requests_in_process(upstream, requests) * 1e6)
    least = {name: min(values) for name, values in samples.items()}
    print(f"in process, a 1-token stream opened, read and recorded (least of {runs} x {requests}):")
    print(f"  one upstream               {least['plain']:6.1f} µs CPU per request")
    print(f"  UPSTREAMS of two           {least['routed']:6.1f} µs CPU per request")
    print(f"  the router's own           {least['routed'] - least['plain']:6.1f} µs (goal < 50)")


# -- 2. and 3. the whole service ---------------------------------------------------------------


def routed_environment(*upstreams: str, **extra: str) -> dict[str, str]:
    entries = [
        {"name": f"d{index}", "base_url": base_url, "api_key": "bench"}
        for index, base_url in enumerate(upstreams)
    ]
    return {
        "UPSTREAMS": json.dumps(entries),
        "LOG_LEVEL": "warning",
        "UPSTREAM_MAX_RETRIES": "0",
        **extra,
    }


def plain_environment(base_url: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": base_url,
        "LOG_LEVEL": "warning",
        "UPSTREAM_MAX_RETRIES": "0",
    }


class Service:
    """`python -m service` with exactly this environment (no OPENAI_BASE_URL beside
    UPSTREAMS, which `bench.processes.ServiceProcess` would add)."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.process, self.base_url = start_service_process(None, capture=False, **environment)
        self.port = port_of(self.base_url)

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)


async def answer(port: int, route: Route) -> tuple[float, int, int]:
    """(seconds to the first text, or to the end without one; text events; status)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (route.path, len(route.body), route.body)
    )
    received = b""
    first = 0.0
    while chunk := await reader.read(65536):
        received += chunk
        if not first and route.mark in received:
            first = time.perf_counter() - started
    writer.close()
    status = int(received.split(b" ", 2)[1]) if received else 0
    return first or time.perf_counter() - started, received.count(route.mark), status


def spread(values: list[float]) -> str:
    median, least, most = statistics.median(values), min(values), max(values)
    return f"median {median:7.1f}, least {least:7.1f}, most {most:7.1f}"


async def cpu_per_request(requests: int = 300, runs: int = 9) -> None:
    """Three services taking turns: one upstream, and `UPSTREAMS` of two deployments on that
    same upstream server (what the router adds, alone), and on two servers (as deployed; on a
    2-core machine the second server's activity costs the service some cache and scheduling
    too, which is not the router's)."""
    first, second = UpstreamProcess(1, 0), UpstreamProcess(1, 0)
    plain = "one upstream"
    services = {
        plain: Service(plain_environment(first.base_url)),
        "two on one server": Service(routed_environment(first.base_url, first.base_url)),
        "two on two servers": Service(routed_environment(first.base_url, second.base_url)),
    }
    try:
        for service in services.values():
            for route in ROUTES:
                for _ in range(30):
                    await answer(service.port, route)  # warm up
        samples: dict[tuple[str, str], list[float]] = {
            (name, route.name): [] for name in services for route in ROUTES
        }
        turns = list(services.items())
        for run in range(runs):
            for route in ROUTES:
                # Each service takes each place in the order in turn: no one is always first.
                for name, service in turns[run % 3 :] + turns[: run % 3]:
                    before = service.cpu()
                    for _ in range(requests):
                        _, texts, status = await answer(service.port, route)
                        assert (texts, status) == (1, 200), (name, route.name, texts, status)
                    samples[name, route.name].append((service.cpu() - before) / requests * 1e6)
        print(f"service CPU per request, 1-token answers, {runs} runs of {requests} taking turns:")
        for route in ROUTES:
            for name in services:
                line = f"  {route.name:22} {name:19} {spread(samples[name, route.name])} µs"
                if name != plain:
                    paired = [
                        routed - alone
                        for routed, alone in zip(
                            samples[name, route.name], samples[plain, route.name], strict=True
                        )
                    ]
                    line += f"; {statistics.median(paired):+.1f} (paired median)"
                print(line)
    finally:
        for service in services.values():
            service.stop()
        first.stop()
        second.stop()


async def cpu_per_token(tokens: int = 20_000, runs: int = 5) -> None:
    first, second = UpstreamProcess(tokens, 0), UpstreamProcess(tokens, 0)
    services = {
        "one upstream": Service(plain_environment(first.base_url)),
        "UPSTREAMS of two": Service(routed_environment(first.base_url, second.base_url)),
    }
    try:
        for service in services.values():
            await answer(service.port, NATIVE)  # warm up
        samples: dict[str, list[float]] = {name: [] for name in services}
        for _ in range(runs):
            for name, service in services.items():
                before = service.cpu()
                _, texts, _ = await answer(service.port, NATIVE)
                assert texts == tokens, (name, texts)
                samples[name].append((service.cpu() - before) / tokens * 1e6)
        print(f"service CPU per relayed token, {tokens} at once, {runs} runs taking turns:")
        for name, values in samples.items():
            print(f"  {name:17} {spread(values)} µs")
    finally:
        for service in services.values():
            service.stop()
        first.stop()
        second.stop()


# -- 4. failover -----------------------------------------------------------------------------


async def times(port: int, route: Route, count: int, status: int) -> list[float]:
    found = []
    for _ in range(count):
        seconds, _, got = await answer(port, route)
        assert got == status, (got, status)
        found.append(seconds * 1e3)
    return found


def failovers(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_upstream_failovers_total{")
    )


async def failover_time(requests: int = 200) -> None:
    healthy = UpstreamProcess(1, 0)
    refusing_503 = UpstreamProcess(1, 0, status=503)
    closed = f"http://127.0.0.1:{free_port()}"
    # Every request probes the failing deployment first: cooldowns of 10 µs, whose timer runs
    # before the next request comes (at 1 ms, a request served in less than that could find
    # the cooldown still running and skip the failing deployment).
    quick = {
        "UPSTREAM_COOLDOWN_SECONDS": "0.00001",
        "UPSTREAM_MAX_COOLDOWN_SECONDS": "0.00001",
        "LOG_LEVEL": "error",  # not a warning per cooldown
    }
    cases = {
        "connection refused": (closed, 502),
        "503": (refusing_503.base_url, 502),
    }
    direct = Service(plain_environment(healthy.base_url))
    try:
        print(f"failover, TTFT p50 of {requests} requests in a row:")
        for route in (NATIVE, PASSTHROUGH):
            await times(direct.port, route, 20, 200)
        for route in (NATIVE, PASSTHROUGH):
            base = statistics.median(await times(direct.port, route, requests, 200))
            print(f"  {route.name}: the healthy deployment through one upstream: {base:.2f} ms")
            for case, (failing, refused_status) in cases.items():
                alone = Service(plain_environment(failing))
                routed = Service(routed_environment(failing, healthy.base_url, **quick))
                try:
                    await times(alone.port, route, 20, refused_status)
                    await times(routed.port, route, 20, 200)
                    counted = failovers(routed.base_url)
                    refusal = statistics.median(
                        await times(alone.port, route, requests, refused_status)
                    )
                    failed_over = statistics.median(await times(routed.port, route, requests, 200))
                    assert failovers(routed.base_url) - counted == requests, "not every request"
                finally:
                    alone.stop()
                    routed.stop()
                added = failed_over - base
                print(
                    f"    {case:18}: failed over {failed_over:.2f} ms, +{added:.2f} ms; the "
                    f"failing one's own refusal {refusal:.2f} ms"
                    f" (added - refusal = {added - refusal:+.2f} ms; goal < +1)"
                )
    finally:
        direct.stop()
        healthy.stop()
        refusing_503.stop()


PARTS: dict[str, Callable[[], Awaitable[None]]] = {
    "inprocess": in_process,
    "request": cpu_per_request,
    "burst": cpu_per_token,
    "failover": failover_time,
}


async def main(parts: list[str]) -> None:
    for name in parts or PARTS:
        await PARTS[name]()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
