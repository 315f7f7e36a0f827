"""The provider table: every kind of upstream the service can stream from, in one place.

Each entry says when the environment asks for it (auto-detection), what it needs to be usable
(checked once, at start-up, naming the variable to fix), its default model, and the module that
builds it. Settings validation, `/healthz` and the app factory derive from this table; adding a
provider is one upstream module with a `build(settings)` function plus one entry here
(ARCHITECTURE.md).

Selection: `PROVIDER` names one; else the one provider whose variables are set; else the
fallback, the embedded demo model, so a fresh clone streams an answer with no key. Two providers
configured at once is an error rather than a guess, except beside `UPSTREAMS`: its router
(`upstreams`) builds each deployment from this same table, and the single upstream's keys may be
what its entries read. Building is lazy (`importlib`), so the demo model never imports the SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.errors import ConfigurationError

if TYPE_CHECKING:
    from service.settings import Settings
    from service.upstream.base import ChatUpstream
    from service.upstream.router import RouterObserver


@dataclass(frozen=True, slots=True)
class Provider:
    # Whether the environment configures this provider (auto-detection).
    wanted: Callable[[Settings], bool]
    # Raises `ConfigurationError` naming the missing variable.
    check: Callable[[Settings], None]
    # The model asked for when a request names none.
    default_model: Callable[[Settings], str]
    # A module with `build(settings: Settings) -> ChatUpstream`.
    module: str
    # How the provider's variables are spelled in messages.
    variables: str
    # `gen_ai.provider.name` in the OpenTelemetry GenAI conventions (a well-known value where
    # one applies), for metrics and traces.
    gen_ai_name: str


def _never(settings: Settings) -> bool:
    return False


def _nothing_needed(settings: Settings) -> None:
    return None


def _azure_wanted(settings: Settings) -> bool:
    return bool(settings.azure_openai_endpoint or settings.azure_openai_api_key)


def _check_azure(settings: Settings) -> None:
    if not settings.azure_openai_endpoint:
        raise ConfigurationError("AZURE_OPENAI_ENDPOINT is required for Azure OpenAI")
    if not settings.azure_openai_api_key:
        raise ConfigurationError(
            "AZURE_OPENAI_API_KEY is required when AZURE_OPENAI_ENDPOINT is set"
        )


def _openai_wanted(settings: Settings) -> bool:
    # A base URL without a key is allowed: local servers (Ollama, vLLM) rarely want one.
    return bool(settings.openai_api_key or settings.openai_base_url)


def _check_openai(settings: Settings) -> None:
    if not _openai_wanted(settings):
        raise ConfigurationError(
            "PROVIDER=openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)"
        )


def _upstreams_wanted(settings: Settings) -> bool:
    return settings.upstreams is not None or settings.upstreams_file is not None


def _check_upstreams(settings: Settings) -> None:
    # The entries are read and checked by `service.upstream.deployments`, once the provider is
    # known; here only what would be ambiguous next to them.
    if not _upstreams_wanted(settings):
        raise ConfigurationError("PROVIDER=upstreams needs UPSTREAMS or UPSTREAMS_FILE")
    for name, value in (
        ("OPENAI_BASE_URL", settings.openai_base_url),
        ("AZURE_OPENAI_ENDPOINT", settings.azure_openai_endpoint),
    ):
        if value:
            raise ConfigurationError(
                f"UPSTREAMS lists the deployments: unset {name} (give that deployment an entry "
                "with its base_url)"
            )


# The router over several deployments (`UPSTREAMS`): chosen whenever they are listed, since the
# single upstream's keys may be set for its entries to read (`api_key_env`).
ROUTER = "upstreams"

PROVIDERS: dict[str, Provider] = {
    "azure": Provider(
        wanted=_azure_wanted,
        check=_check_azure,
        # On Azure a request names a deployment.
        default_model=lambda s: s.azure_openai_deployment or s.default_model,
        module="service.upstream.openai_chat",
        variables="AZURE_OPENAI_*",
        gen_ai_name="azure.ai.openai",
    ),
    "openai": Provider(
        wanted=_openai_wanted,
        check=_check_openai,
        default_model=lambda s: s.default_model,
        module="service.upstream.openai_chat",
        variables="OPENAI_*",
        gen_ai_name="openai",
    ),
    ROUTER: Provider(
        wanted=_upstreams_wanted,
        check=_check_upstreams,
        default_model=lambda s: s.default_model,
        module="service.upstream.router",
        variables="UPSTREAMS",
        # Only a stream no deployment answered keeps it: the others name their deployment's.
        gen_ai_name="upstreams",
    ),
    "demo": Provider(
        wanted=_never,
        check=_nothing_needed,
        default_model=lambda s: "demo",
        module="service.upstream.demo",
        variables="",
        gen_ai_name="demo",
    ),
}
FALLBACK = "demo"


def resolve_provider(settings: Settings, requested: str) -> str:
    """The provider to use: `requested` (`PROVIDER`), or `auto` to detect it."""
    if requested == "auto":
        wanted = [name for name, provider in PROVIDERS.items() if provider.wanted(settings)]
        if ROUTER in wanted:
            wanted = [ROUTER]
        if len(wanted) > 1:
            described = " and ".join(f"{name} ({PROVIDERS[name].variables})" for name in wanted)
            raise ConfigurationError(
                f"{described} are configured; set "
                + " or ".join(f"PROVIDER={name}" for name in wanted)
                + " to choose"
            )
        requested = wanted[0] if wanted else FALLBACK
    if requested not in PROVIDERS:
        raise ConfigurationError(
            f"PROVIDER must be auto or one of {', '.join(PROVIDERS)}; got {requested!r}"
        )
    PROVIDERS[requested].check(settings)
    return requested


def build_upstream(
    settings: Settings,
    on_retry: Callable[[], None] | None = None,
    router_observer: RouterObserver | None = None,
) -> ChatUpstream:
    """The configured provider's upstream; `on_retry` is called for each request it repeats
    (an upstream that never retries ignores it). `router_observer` watches the router over
    several deployments (`UPSTREAMS`; `/metrics`), when that is what is configured."""
    module = importlib.import_module(PROVIDERS[settings.provider].module)
    if settings.provider == ROUTER:
        router: ChatUpstream = module.build(settings, on_retry, router_observer)
        return router
    upstream: ChatUpstream = module.build(settings, on_retry)
    return upstream
