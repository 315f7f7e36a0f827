"""Configuration: read once from the environment (and `.env`), validated, then passed in.

The provider is resolved once, in the validator, from the provider table
(`service.upstream.providers`), so a misconfiguration fails at start-up with a message naming the
variable rather than at the first request:

- `AZURE_OPENAI_ENDPOINT` (with `AZURE_OPENAI_API_KEY`) -> Azure OpenAI;
- `OPENAI_API_KEY` and/or `OPENAI_BASE_URL` -> OpenAI or any OpenAI-compatible server
  (vLLM, Ollama, LM Studio: a base URL without a key is allowed, local servers rarely want one);
- nothing -> the embedded demo model, so a fresh clone streams an answer with no key.

`PROVIDER` forces a choice when more than one is configured.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigurationError
from service.upstream.providers import PROVIDERS, resolve_provider

__all__ = ["ConfigurationError", "Settings"]


class Settings(BaseSettings):
    """Every knob of the service. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # `auto`, or a name from the provider table (`service.upstream.providers.PROVIDERS`).
    provider_override: str = Field(default="auto", alias="PROVIDER")
    _provider: str = PrivateAttr(default="")

    # OpenAI and OpenAI-compatible servers (the SDK's own variable names).
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

    # Azure OpenAI.
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_deployment: str | None = None

    default_model: str = "gpt-4o-mini"
    # Ask for the final usage chunk (`stream_options.include_usage`); some servers reject it.
    upstream_include_usage: bool = True
    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Longest silence from the upstream: between two reads, and (after the first token) without
    # content, however many comments or empty chunks arrive meanwhile (service.deadline).
    upstream_read_timeout_seconds: float = Field(default=60.0, gt=0)
    # The longest a stream may last, however busy the upstream keeps it (issue #11).
    max_stream_seconds: float = Field(default=1800.0, gt=0)
    # Longest wait from the request to the first token, retries included.
    first_token_timeout_seconds: float = Field(default=60.0, gt=0)
    upstream_max_retries: int = Field(default=2, ge=0, le=10)
    # The SDK's HTTP transport. aiohttp reads a streamed event for about half the CPU of httpx2
    # (`bench/parse_cost.py`); both keep the SDK's auth, retries and errors.
    upstream_http_client: Literal["aiohttp", "httpx2"] = "aiohttp"

    demo_tokens_per_second: float = Field(default=30.0, gt=0, le=10_000)
    demo_first_token_delay_seconds: float = Field(default=0.25, ge=0, le=60)

    # SSE comment every N seconds so idle timeouts of proxies don't cut a slow answer.
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    # NDJSON clients must skip {"type":"ping"} lines, so they are sent only when asked for.
    ndjson_heartbeat: bool = False
    # EventSource's reconnection delay, sent as the SSE `retry:` field.
    sse_retry_ms: int = Field(default=3000, ge=0, le=3_600_000)
    # A client that accepts no bytes for this long is dropped and its upstream closed.
    send_timeout_seconds: float = Field(default=30.0, gt=0)

    # On SIGTERM, open streams get this long to finish before they are ended in-band.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=3600)

    # Limits (issue #4): 429 beyond the concurrency limits, 413 beyond the body size, 422 beyond
    # the others, each naming the limit.
    max_concurrent_streams: int = Field(default=200, ge=1)
    max_streams_per_key: int | None = Field(default=None, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_messages: int = Field(default=500, ge=1)
    max_input_chars: int = Field(default=400_000, ge=1)
    max_output_tokens: int = Field(default=16_384, ge=1)
    # The request head (request line and headers): 431 beyond (414 for the request line), and
    # 408 when it or the body takes longer than its timeout (service.http.server_protocol).
    max_request_head_bytes: int = Field(default=65_536, ge=4096, le=16 * 1024 * 1024)
    request_head_timeout_seconds: float = Field(default=10.0, gt=0)
    request_body_timeout_seconds: float = Field(default=30.0, gt=0)

    # Comma-separated keys clients must send as `Authorization: Bearer <key>`; none: open.
    service_api_keys: SecretStr | None = None
    # /docs, /redoc and /openapi.json; unset: served only when no SERVICE_API_KEYS are set.
    docs_enabled: bool | None = None
    # Comma-separated origins allowed to call the API from a browser (CORS); none: same origin.
    cors_allow_origins: str = ""
    cors_allow_credentials: bool = False

    # Resumable streams across replicas (issue #13), off unless REDIS_URL is set: then a stream
    # outlives a dropped connection for RESUME_GRACE_SECONDS and any replica can resume it
    # (`service.resume`). With it unset the Redis client is never imported.
    redis_url: SecretStr | None = None
    # Prefix of every key and channel, so that several deployments can share one Redis.
    redis_key_prefix: str = Field(default="llm-stream:", min_length=1, max_length=100)
    # Connecting and each command; past it Redis counts as unreachable (streams go on without
    # resume).
    redis_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    # A stream whose every client left is cancelled when none comes back within this long.
    resume_grace_seconds: float = Field(default=10.0, gt=0, le=3600)
    # How long a finished stream stays resumable.
    resume_ttl_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # A producing replica that has not renewed its lease for this long is taken for dead: its
    # resuming clients get a retryable `stream_lost` error and the end marker.
    resume_lease_seconds: float = Field(default=5.0, gt=0, le=600)
    # The most events a stream keeps in Redis (older ones are trimmed; resuming before them is
    # refused). Above MAX_OUTPUT_TOKENS, so a whole answer fits.
    resume_max_events: int = Field(default=20_000, ge=100)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Worker processes for `python -m service` (uvicorn's supervisor; one socket shared). The
    # limits above hold per worker; `/metrics` sums over all of them (issue #10).
    workers: int = Field(default=1, ge=1, le=64)
    # Models named as such in `/metrics` besides the default one; any other model a request
    # names is counted as `other`, so a client cannot grow the label set (issue #10).
    metrics_models: str = ""
    # OTLP/HTTP collector to send one trace span per stream to (e.g. http://127.0.0.1:4318);
    # unset: no tracing, and the OpenTelemetry SDK is not even imported.
    otel_exporter_otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check_provider(self) -> Settings:
        self._provider = resolve_provider(self, self.provider_override.strip().lower())
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
        """The models `/metrics` names: the default and `METRICS_MODELS`."""
        listed = (name.strip() for name in self.metrics_models.split(","))
        return frozenset({self.model_name, *(name for name in listed if name)})

    @property
    def provider(self) -> str:
        """The provider's name in the provider table, resolved once at validation."""
        return self._provider

    @property
    def model_name(self) -> str:
        """The model asked for when a request names none (the deployment, on Azure)."""
        return PROVIDERS[self._provider].default_model(self)
