"""Support code that the tests and the benchmarks share: real parts to run the service against.

Not part of the service (its wheel ships `service` only); imported from the repository root,
like `tests` and `bench`. One module per part:

- `fake_upstream`: an OpenAI-compatible upstream on a loopback port, and the bodies it sends;
  `recordings/` holds streams recorded from real upstreams for it to replay.
- `services`: the app in a real uvicorn in this process (a thread with its own loop).
- `service_process`: `python -m service` as a child process.
- `nginx`: Debian's nginx as a stock reverse proxy, run as a child process.
- `redis_server`: Debian's redis-server, run as a child process (resumable streams).
- `cutting_proxy`: a TCP forwarder that drops every connection through it on demand.
- `prometheus`: Debian's Prometheus with the repository's example configuration, scraping a
  service; `metrics_reader`: `GET /metrics` read back as numbers.
- `sse_client`, `raw_client`: clients that read a stream, whole or byte by byte on a raw socket.
- `browser`: Debian's chromium for Playwright.
- `compose_stack`: `docker compose` for real on podman's Docker API (scripts/podman-setup.sh).
- `ports`, `waiting`: free loopback ports, and waiting on a condition with a deadline.

Tests synchronise on what these parts record (an upstream exchange, a stream summary, a port
that listens), never on a fixed sleep.
"""
