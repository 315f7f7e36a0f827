"""Several upstream deployments (`UPSTREAMS`, `UPSTREAMS_FILE`): what each entry may say, read
and checked once, at start-up.

Each entry is one deployment of the provider table (`service.upstream.providers`) with its own
address, key and limits:

    {"name": "eastus", "provider": "azure", "base_url": "https://….openai.azure.com",
     "api_key_env": "EASTUS_KEY", "api_version": "2024-10-21",
     "models": {"gpt-4o": "gpt-4o-eastus"}, "weight": 2, "max_concurrent": 100}

- `name`: how logs, the `start` event, traces and `/metrics` call it (default `deployment-<i>`).
- `provider`: `openai` (any OpenAI-compatible server; the default), `azure` or `demo`.
- `base_url`: the server (`https://…/v1`), or on Azure the resource's endpoint.
- `api_key`, or `api_key_env`: the name of the environment variable holding it (a setting of
  the service such as `OPENAI_API_KEY` is read as the service reads it, `.env` included).
- `api_version`: Azure's (default `AZURE_OPENAI_API_VERSION`).
- `models`: the models it serves, a list, or a mapping from the model a client asks for to the
  name this deployment knows it by (an Azure deployment name); left out, it serves any model,
  asked for by the client's name.
- `weight` (default 1), `max_concurrent` (default unbounded, per process): balancing
  (`service.upstream.router`).
- `max_retries`: the SDK's own retries of one request on this deployment (default: 0 when there
  are several deployments, the next one answering sooner than the same one after a backoff;
  `UPSTREAM_MAX_RETRIES` when it is the only one).
- `failover_timeout_seconds`: this deployment's `FAILOVER_TIMEOUT_SECONDS`.

A deployment is built as the single upstream is, from a copy of the service's settings with the
entry's values in place of the provider's variables (`deployment_settings`), so the provider
table's constructors, the SDK client and its transport are the same code. A mistake stops the
service with a message naming the entry (its index and name) and the field; no value is ever
repeated, as it may be a key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from service.errors import ConfigurationError
from service.upstream.providers import PROVIDERS, ROUTER

if TYPE_CHECKING:
    from service.settings import Settings

# The providers a deployment may be: every entry of the provider table but the router itself.
DEPLOYMENT_PROVIDERS = tuple(name for name in PROVIDERS if name != ROUTER)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$"
_VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class DeploymentEntry(BaseModel):
    """One entry as written; unknown fields are refused, so a misspelt one is not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, pattern=_NAME_PATTERN)
    provider: str = "openai"
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, pattern=_VARIABLE_PATTERN)
    api_version: str | None = Field(default=None, min_length=1, max_length=40)
    models: list[str] | dict[str, str] | None = None
    weight: float = Field(default=1.0, gt=0, le=1000)
    max_concurrent: int | None = Field(default=None, ge=1)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    failover_timeout_seconds: float | None = Field(default=None, gt=0)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment ready to build: its name, its own settings (for the provider table's
    `build`), and what the router needs to choose it."""

    name: str
    provider: str
    settings: Settings
    # The model a client asks for -> the name sent to this deployment; None: any model, as
    # asked.
    models: Mapping[str, str] | None
    weight: float
    max_concurrent: int | None
    failover_timeout_seconds: float

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def model_for(self, model: str) -> str:
        """The name this deployment knows `model` by."""
        return model if self.models is None else self.models[model]


def load_deployments(settings: Settings) -> tuple[Deployment, ...]:
    """The deployments `UPSTREAMS` or `UPSTREAMS_FILE` lists; `ConfigurationError` naming the
    entry and the field for the first mistake."""
    source, entries = _read_entries(settings)
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source} must be a non-empty list of deployments")
    parsed = [_parse(source, index, entry) for index, entry in enumerate(entries)]
    names: dict[str, int] = {}
    for index, entry in enumerate(parsed):
        name = entry.name or f"deployment-{index}"
        if name in names:
            raise ConfigurationError(
                f"{source}[{index}]: name {name!r} is also the name of entry {names[name]}; "
                "give each deployment its own"
            )
        names[name] = index
    only_one = len(parsed) == 1
    return tuple(
        _deployment(settings, f"{source}[{index}] {name!r}", name, entry, only_one)
        for (name, index), entry in zip(names.items(), parsed, strict=True)
    )


def _read_entries(settings: Settings) -> tuple[str, Any]:
    """Where the list comes from (for messages) and its decoded value."""
    if settings.upstreams is not None and settings.upstreams_file is not None:
        raise ConfigurationError("set UPSTREAMS or UPSTREAMS_FILE, not both")
    if settings.upstreams is not None:
        return "UPSTREAMS", _json("UPSTREAMS", settings.upstreams.get_secret_value())
    path = settings.upstreams_file
    assert path is not None
    source = f"UPSTREAMS_FILE ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{source} cannot be read: {reason}") from None
    if Path(path).suffix.lower() == ".json":
        return source, _json(source, text)
    return source, _yaml(source, text)


def _json(source: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # The position only: the text may hold a key.
        raise ConfigurationError(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def _yaml(source: str, text: str) -> Any:
    import yaml  # only for a YAML file

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        # PyYAML's own message quotes the offending line, which may hold a key: not repeated.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise ConfigurationError(f"{source} is not valid YAML: {problem}{where}") from None


def _parse(source: str, index: int, entry: Any) -> DeploymentEntry:
    try:
        return DeploymentEntry.model_validate(entry)
    except ValidationError as error:
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{source}[{index}]" + (f" {name!r}" if isinstance(name, str) else "")
        problem = error.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(
            f"{where}: {field}: {message}" if field else f"{where}: {message}"
        ) from None


def _deployment(
    settings: Settings, where: str, name: str, entry: DeploymentEntry, only_one: bool
) -> Deployment:
    if entry.provider not in DEPLOYMENT_PROVIDERS:
        raise ConfigurationError(
            f"{where}: provider must be one of {', '.join(DEPLOYMENT_PROVIDERS)}; "
            f"got {entry.provider[:40]!r}"
        )
    if entry.api_key is not None and entry.api_key_env is not None:
        raise ConfigurationError(f"{where}: give api_key or api_key_env, not both")
    if entry.api_version is not None and entry.provider != "azure":
        raise ConfigurationError(f"{where}: api_version is for provider azure only")
    key = entry.api_key or _key_from_environment(settings, where, entry.api_key_env)
    if entry.provider == "azure" and entry.base_url is None:
        raise ConfigurationError(
            f"{where}: base_url is required for provider azure (the resource's endpoint, "
            "https://<resource>.openai.azure.com)"
        )
    if entry.provider == "azure" and key is None:
        raise ConfigurationError(f"{where}: api_key or api_key_env is required for provider azure")
    if entry.provider == "openai" and entry.base_url is None and key is None:
        raise ConfigurationError(
            f"{where}: give base_url (an OpenAI-compatible server) or a key (OpenAI's API)"
        )
    own = deployment_settings(
        settings, entry, key, settings.upstream_max_retries if only_one else 0
    )
    try:
        # The provider table's own check, behind the entry's: a provider added to the table
        # says here what its deployments lack.
        PROVIDERS[entry.provider].check(own)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    return Deployment(
        name=name,
        provider=entry.provider,
        settings=own,
        models=_models(where, entry.models),
        weight=entry.weight,
        max_concurrent=entry.max_concurrent,
        failover_timeout_seconds=entry.failover_timeout_seconds
        or settings.failover_timeout_seconds,
    )


def _key_from_environment(settings: Settings, where: str, variable: str | None) -> SecretStr | None:
    """The key in `variable`: a setting of the service (`OPENAI_API_KEY`, read from the
    environment or `.env` as the service reads it), else the process's environment."""
    if variable is None:
        return None
    own = getattr(settings, variable.lower(), None) if variable.lower() in _SECRET_FIELDS else None
    if isinstance(own, SecretStr):
        return own
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigurationError(f"{where}: api_key_env names {variable}, which is not set")
    return SecretStr(value)


# The settings whose value may be a deployment's key (`api_key_env`).
_SECRET_FIELDS = frozenset({"openai_api_key", "azure_openai_api_key"})


def _models(where: str, models: list[str] | dict[str, str] | None) -> Mapping[str, str] | None:
    if models is None:
        return None
    mapping = {model: model for model in models} if isinstance(models, list) else dict(models)
    if not mapping:
        raise ConfigurationError(f"{where}: models is empty (leave it out to serve any model)")
    # Both sides: the name a client asks for and the name sent to this deployment.
    if any(not 1 <= len(name) <= 200 for pair in mapping.items() for name in pair):
        raise ConfigurationError(f"{where}: models: every name must be 1 to 200 characters")
    return mapping


def deployment_settings(
    settings: Settings, entry: DeploymentEntry, key: SecretStr | None, max_retries: int
) -> Settings:
    """The service's settings with the entry's values in place of the single upstream's
    variables: what the provider table's `build` reads (`service.upstream.openai_chat`). A
    provider with variables of its own maps an entry's fields onto them here."""
    update: dict[str, Any] = {
        "upstreams": None,
        "upstreams_file": None,
        "openai_api_key": None,
        "openai_base_url": None,
        "azure_openai_endpoint": None,
        "azure_openai_api_key": None,
        "azure_openai_deployment": None,
        "upstream_max_retries": max_retries if entry.max_retries is None else entry.max_retries,
    }
    if entry.provider == "azure":
        update["azure_openai_endpoint"] = entry.base_url
        update["azure_openai_api_key"] = key
        if entry.api_version is not None:
            update["azure_openai_api_version"] = entry.api_version
    elif entry.provider == "openai":
        update["openai_base_url"] = entry.base_url
        update["openai_api_key"] = key
    copied = settings.model_copy(update=update)
    copied._provider = entry.provider
    copied._deployments = ()
    return copied
