"""Starting each gateway under comparison in its own process, pinned to the gateway core.

Every gateway runs as its users would run it (its defaults, its own logging to a file), with
three exceptions made for the measurement and said here: the service may hold more than its
default 200 streams at once (the load goes to 250 and beyond); the floor logs nothing (it is a
floor); LiteLLM is kept offline (below).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.compare.targets import LITELLM_KEY
from bench.processes import ListeningProcess
from bench.upstream_server import UpstreamProcess
from testkit.ports import free_port
from testkit.service_process import service_env

# Where LiteLLM would fetch files at start-up (model prices, beta headers, blog posts, presets,
# policy templates): each has a switch to use the copy in the package, and every URL is also
# pointed at a closed loopback port, so a missed fetch fails at once instead of leaving the host.
# (`--telemetry` is a no-op in 1.106: there is no usage telemetry left to switch off.) Traced
# with `strace -f -e trace=connect`: start-up and a streamed request connect to nothing but the
# fake upstream.
_NOWHERE = "http://127.0.0.1:9/"
LITELLM_OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODEL_COST_MAP_URL": _NOWHERE,
    "LITELLM_BLOG_POSTS_URL": _NOWHERE,
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": _NOWHERE,
    "LITELLM_AUTOROUTER_PRESETS_URL": _NOWHERE,
    "HF_HUB_OFFLINE": "1",
    "NO_PROXY": "*",
}

# A master key is required to start (1.106); clients send it (targets.LITELLM_KEY).
LITELLM_CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/v1
      api_key: bench
general_settings:
  master_key: {key}
"""


@dataclass(frozen=True)
class Context:
    upstream: UpstreamProcess
    cpu: int
    logs: Path  # each gateway writes its output to a file here
    litellm: Path | None  # the `litellm` command from its own virtual environment


def _log(context: Context, name: str) -> Path:
    return context.logs / f"{name}.log"


def _uvicorn(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]


def start_floor(context: Context) -> ListeningProcess:
    port = free_port()
    command = _uvicorn("bench.compare.relays.floor:app", port)
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    command += ["--log-level", "warning"]
    return ListeningProcess(
        command,
        port,
        env={**os.environ, "UPSTREAM_BASE_URL": context.upstream.base_url},
        cpus={context.cpu},
        log=_log(context, "floor"),
    )


def start_tutorial(context: Context) -> ListeningProcess:
    # uvicorn's defaults, as the blog posts run it (it picks uvloop and httptools when present).
    port = free_port()
    return ListeningProcess(
        _uvicorn("bench.compare.relays.tutorial:app", port),
        port,
        env={**os.environ, "UPSTREAM_BASE_URL": context.upstream.base_url},
        cpus={context.cpu},
        log=_log(context, "tutorial"),
    )


def start_service(context: Context) -> ListeningProcess:
    # `python -m service` as shipped: its defaults (info logging, two retries), one limit raised.
    port = free_port()
    env = service_env(
        OPENAI_API_KEY="bench",
        OPENAI_BASE_URL=context.upstream.base_url,
        PORT=str(port),
        MAX_CONCURRENT_STREAMS="100000",
    )
    return ListeningProcess(
        [sys.executable, "-m", "service"],
        port,
        env=env,
        cpus={context.cpu},
        log=_log(context, "service"),
    )


def start_litellm(context: Context) -> ListeningProcess:
    if context.litellm is None:
        raise RuntimeError("LiteLLM is not installed (make bench-compare installs it)")
    config = context.logs / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=context.upstream.base_url, key=LITELLM_KEY))
    port = free_port()
    command = [str(context.litellm), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1"]
    return ListeningProcess(
        command,
        port,
        env={**os.environ, **LITELLM_OFFLINE},
        cpus={context.cpu},
        log=_log(context, "litellm"),
        timeout=120,  # it imports a great deal
    )


GATEWAYS: dict[str, Callable[[Context], ListeningProcess]] = {
    "floor": start_floor,
    "service": start_service,
    "tutorial": start_tutorial,
    "litellm": start_litellm,
}
