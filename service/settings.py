"""Configuration: read once from the environment (and `.env`), validated, then passed in.

The provider is resolved once, in the validator, from the provider table
(`service.upstream.providers`), so a misconfiguration fails at start-up with a message naming the
variable rather than at the first request:

- `AZURE_OPENAI_ENDPOINT` (with `AZURE_OPENAI_API_KEY`) -> Azure OpenAI;
- `OPENAI_API_KEY` and/or `OPENAI_BASE_URL` -> OpenAI or any OpenAI-compatible server
  (vLLM, Ollama, LM Studio: a base URL without a key is allowed, local servers rarely want one);
- nothing -> the embedded demo model, so a fresh clone streams an answer with no key.

`PROVIDER` forces a choice when more than one is configured. `UPSTREAMS` (or `UPSTREAMS_FILE`)
lists several deployments instead, each with its own address and key
(`service.upstream.deployments`); the single upstream's keys may then be what its entries read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError
from service.upstream.deployments import Deployment, load_deployments
from service.upstream.providers import PROVIDERS, ROUTER, resolve_provider

__all__ = ["ConfigurationError", "Settings"]


class Settings(BaseSettings):
    """Every knob of the service. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Every field has a `description`: docs/configuration.md's table is generated from them
    # (`make docs-config`), and a test fails when the page and this class disagree (issue #18).

    provider_override: str = Field(
        default="auto",
        alias="PROVIDER",
        description="Which upstream answers: `auto` detects it from the variables that are set "
        "(the demo model when none is), or a name from the provider table "
        "(`service.upstream.providers`): `openai`, `azure`, `demo`, `upstreams` (the "
        "deployments `UPSTREAMS` lists). Required when both OpenAI and Azure are configured.",
    )
    _provider: str = PrivateAttr(default="")
    # With UPSTREAMS (or UPSTREAMS_FILE): the deployments, read once at validation.
    _deployments: tuple[Deployment, ...] = PrivateAttr(default=())

    # OpenAI and OpenAI-compatible servers (the SDK's own variable names).
    openai_api_key: SecretStr | None = Field(
        default=None, description="The OpenAI key; setting it selects the OpenAI provider."
    )
    openai_base_url: str | None = Field(
        default=None,
        description="Any OpenAI-compatible server, e.g. `http://localhost:11434/v1` (Ollama) or "
        "`http://localhost:8000/v1` (vLLM); selects the OpenAI provider, no key needed. "
        "Unset: OpenAI's API.",
    )

    # Azure OpenAI.
    azure_openai_endpoint: str | None = Field(
        default=None,
        description="`https://<resource>.openai.azure.com`; selects Azure OpenAI (needs "
        "`AZURE_OPENAI_API_KEY`).",
    )
    azure_openai_api_key: SecretStr | None = Field(default=None, description="The Azure key.")
    azure_openai_api_version: str = Field(
        default="2024-10-21",
        description="The Azure API version (`/v1/responses` needs `2025-03-01-preview` or newer).",
    )
    azure_openai_deployment: str | None = Field(
        default=None,
        description="The Azure deployment used when a request names no model. Unset: "
        "`DEFAULT_MODEL`.",
    )

    default_model: str = Field(
        default="gpt-4o-mini",
        description="The model asked for when a request names none (the demo model answers as "
        "`demo`).",
    )
    upstream_include_usage: bool = Field(
        default=True,
        description="Ask for the final usage chunk (`stream_options.include_usage`); `false` for "
        "servers that reject it.",
    )
    upstream_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connecting to the upstream."
    )
    # service.deadline.
    upstream_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest silence from the upstream: the wait for its response head, each "
        "read of a non-streamed answer, and, after the first token, the time without content, "
        "however many comments or empty chunks arrive meanwhile. Before a stream's first token, "
        "`FIRST_TOKEN_TIMEOUT_SECONDS` bounds the wait.",
    )
    # Issue #11.
    max_stream_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="The longest a stream may last, however busy the upstream keeps it; then an "
        "in-band `stream_deadline` error.",
    )
    first_token_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait from the request to the first token, retries included "
        "(streams only).",
    )
    upstream_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="How often the SDK repeats a request that failed with 429, 5xx or a "
        "connection error (with backoff, honouring `Retry-After`): before the first token only, "
        "never after.",
    )
    # Issue #16: `service.upstream.transport`; `bench/parse_cost.py` prints both.
    upstream_http_client: Literal["builtin", "httpx2"] = Field(
        default="builtin",
        description="The SDK's HTTP transport: `builtin` (the service's own HTTP/1.1 "
        "connections, a fraction of the CPU per streamed token) or `httpx2` (the SDK's "
        "default); both keep the SDK's auth, retries and errors. `aiohttp`, its former name, "
        "means `builtin`.",
    )

    @field_validator("upstream_http_client", mode="before")
    @classmethod
    def _former_transport_name(cls, value: object) -> object:
        # The transport was aiohttp's until issue #16; a configuration naming it still works.
        return "builtin" if value == "aiohttp" else value

    # Several deployments (issue #17, `service.upstream.deployments`, `service.upstream.router`).
    upstreams: SecretStr | None = Field(
        default=None,
        description="A JSON list of upstream deployments to balance and fail over between, "
        'each `{"name", "provider", "base_url", "api_key" or "api_key_env", "api_version", '
        '"models", "weight", "max_concurrent"}` ([Several upstream deployments]'
        "(upstreams.md)). It replaces `OPENAI_BASE_URL` and `AZURE_OPENAI_ENDPOINT`. Unset: "
        "the one upstream those variables describe, and nothing changes.",
    )
    upstreams_file: Path | None = Field(
        default=None,
        description="The same list in a YAML (or `.json`) file, instead of `UPSTREAMS`.",
    )
    failover_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="With `UPSTREAMS`: how long a stream waits for one deployment's first "
        "token (its response head included) before it moves on to the next; the last "
        "deployment left gets the rest of `FIRST_TOKEN_TIMEOUT_SECONDS`. Raise it for "
        "reasoning models, which think before their first token.",
    )
    upstream_cooldown_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="With `UPSTREAMS`: how long a deployment that failed is skipped, at "
        "least its `Retry-After`; doubled with each failure in a row, then one request probes "
        "it.",
    )
    upstream_max_cooldown_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="With `UPSTREAMS`: the longest cooldown, and that of a deployment whose "
        "key is refused (401, 403) or whose quota is exhausted.",
    )

    demo_tokens_per_second: float = Field(
        default=30.0, gt=0, le=10_000, description="The demo model's pace."
    )
    demo_first_token_delay_seconds: float = Field(
        default=0.25, ge=0, le=60, description="The demo model's time to first token."
    )

    heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Idle time before a `: ping` SSE comment (also while waiting for the first "
        "token), so idle timeouts of proxies don't cut a slow answer.",
    )
    ndjson_heartbeat: bool = Field(
        default=False,
        description='Send `{"type":"ping","content":""}` lines in NDJSON streams too; off '
        "because NDJSON clients must then skip them.",
    )
    sse_retry_ms: int = Field(
        default=3000,
        ge=0,
        le=3_600_000,
        description="`EventSource`'s reconnection delay, sent as the SSE `retry:` field.",
    )
    send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A client that accepts no bytes for this long is dropped, and its upstream "
        "request closed.",
    )

    shutdown_grace_seconds: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long open streams get to finish before they are ended "
        "in-band (`server_shutting_down`).",
    )

    # Limits (issue #4): 429 beyond the concurrency limits, 413 beyond the body size, 422 beyond
    # the others, each naming the limit.
    max_concurrent_streams: int = Field(
        default=200,
        ge=1,
        description="Streams at once in each worker process; 429 `too_many_streams` beyond.",
    )
    max_streams_per_key: int | None = Field(
        default=None,
        ge=1,
        description="Streams at once per service API key (needs `SERVICE_API_KEYS`). Unset: "
        "no per-key limit.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Request body size; 413 beyond."
    )
    max_messages: int = Field(
        default=500, ge=1, description="Messages per request (`input` items on `/v1/responses`)."
    )
    max_input_chars: int = Field(
        default=400_000,
        ge=1,
        description="Characters of message content per request (on `/v1` also tool call "
        "arguments and results, and `instructions`).",
    )
    max_output_tokens: int = Field(
        default=16_384,
        ge=1,
        description="The highest `max_tokens` (`max_completion_tokens`, `max_output_tokens`) a "
        "request may ask for; none is added when a request leaves it out.",
    )
    # service.http.server_protocol.
    max_request_head_bytes: int = Field(
        default=65_536,
        ge=4096,
        le=16 * 1024 * 1024,
        description="The request line and headers: 414 beyond for the request line, 431 for "
        "the whole head.",
    )
    request_head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time to send the request head, from connecting or from its first byte; "
        "408 beyond (an idle new connection counts).",
    )
    request_body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Time to send the body after the head; 408 beyond."
    )

    service_api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated keys clients must send as `Authorization: Bearer <key>`. "
        "Unset: no auth.",
    )
    # Issue #11.
    docs_enabled: bool | None = Field(
        default=None,
        description="Serve `/docs`, `/redoc` and `/openapi.json`. Unset: served only when no "
        "`SERVICE_API_KEYS` are set.",
    )
    cors_allow_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the API from a browser (CORS). "
        "Unset: same origin only.",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Allow credentialed cross-origin requests (refused with "
        "`CORS_ALLOW_ORIGINS=*`).",
    )

    # Resumable streams across replicas (issue #13), off unless REDIS_URL is set (`service.resume`).
    # With it unset the Redis client is never imported.
    redis_url: SecretStr | None = Field(
        default=None,
        description="e.g. `redis://redis:6379/0` (or `rediss://`, `unix://`): streams become "
        "resumable from any replica, and outlive a dropped connection for "
        "`RESUME_GRACE_SECONDS`. Unset: no resume, nothing changes.",
    )
    redis_key_prefix: str = Field(
        default="llm-stream:",
        min_length=1,
        max_length=100,
        description="Prefix of every Redis key and channel, so that several deployments can "
        "share one Redis.",
    )
    redis_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Connecting to Redis and each command; past it Redis counts as unreachable "
        "(streams go on without resume).",
    )
    resume_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A stream whose every client left is cancelled when none comes back within "
        "this long.",
    )
    resume_ttl_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="How long a finished stream stays resumable."
    )
    resume_lease_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="A producing replica that has not renewed its lease for this long is taken "
        "for dead: its resuming clients get a retryable `stream_lost` error and the end marker.",
    )
    resume_max_events: int = Field(
        default=20_000,
        ge=100,
        description="The most events a stream keeps in Redis (older ones are trimmed; resuming "
        "before them is refused). Above `MAX_OUTPUT_TOKENS`, so a whole answer fits.",
    )

    host: str = Field(default="127.0.0.1", description="Where `python -m service` listens.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="The port `python -m service` listens on."
    )
    # Issue #10.
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes of `python -m service` (uvicorn's supervisor; one socket "
        "shared): one per core. The limits hold per worker; `/metrics` sums over all of them.",
    )
    # Issue #10: a client naming models cannot grow the label set.
    metrics_models: str = Field(
        default="",
        description="Comma-separated models `/metrics` names besides the default one; any other "
        "model a request names is counted as `other`.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="An OTLP/HTTP collector to send one trace span per stream to (e.g. "
        "`http://127.0.0.1:4318`). Unset: no tracing, and the OpenTelemetry SDK is not even "
        "imported.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The level of the service's JSON log lines."
    )

    @model_validator(mode="after")
    def _check_provider(self) -> Settings:
        self._provider = resolve_provider(self, self.provider_override.strip().lower())
        routed = self.upstreams is not None or self.upstreams_file is not None
        if routed and self._provider != ROUTER:
            raise ConfigurationError(
                f"UPSTREAMS lists the deployments: PROVIDER must be auto or {ROUTER} with it"
            )
        if routed:
            self._deployments = load_deployments(self)
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ConfigurationError(
                "CORS_ALLOW_ORIGINS=* cannot be combined with CORS_ALLOW_CREDENTIALS=true "
                "(browsers refuse it, and it would let any site use a visitor's credentials); "
                "list the origins"
            )
        if self.service_api_keys is not None and not self.api_keys:
            raise ConfigurationError(
                "SERVICE_API_KEYS is set but holds no key; unset it to run without keys"
            )
        if self.max_streams_per_key is not None and not self.api_keys:
            raise ConfigurationError("MAX_STREAMS_PER_KEY needs SERVICE_API_KEYS")
        if self.redis_url is not None and not self.redis_url.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            # The value may hold a password: it is not repeated.
            raise ConfigurationError("REDIS_URL must start with redis://, rediss:// or unix://")
        return self

    @property
    def api_keys(self) -> tuple[str, ...]:
        if self.service_api_keys is None:
            return ()
        raw = self.service_api_keys.get_secret_value()
        return tuple(key.strip() for key in raw.split(",") if key.strip())

    @property
    def serve_docs(self) -> bool:
        """Whether the API documents are served: a keyed service does not show its API to
        anyone who asks, unless DOCS_ENABLED says so (issue #11)."""
        return self.docs_enabled if self.docs_enabled is not None else not self.api_keys

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return tuple(
            origin.strip() for origin in self.cors_allow_origins.split(",") if origin.strip()
        )

    @property
    def metrics_model_names(self) -> frozenset[str]:
        """The models `/metrics` names: the default, `METRICS_MODELS`, and the models the
        deployments of `UPSTREAMS` list."""
        listed = (name.strip() for name in self.metrics_models.split(","))
        served = (model for d in self._deployments if d.models is not None for model in d.models)
        return frozenset({self.model_name, *(name for name in listed if name), *served})

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        """The deployments of `UPSTREAMS` (or `UPSTREAMS_FILE`); none without."""
        return self._deployments

    @property
    def provider(self) -> str:
        """The provider's name in the provider table, resolved once at validation."""
        return self._provider

    @property
    def model_name(self) -> str:
        """The model asked for when a request names none (the deployment, on Azure)."""
        return PROVIDERS[self._provider].default_model(self)
