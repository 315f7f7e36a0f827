"""Hostile input, generated: schemathesis fuzzes every operation of the OpenAPI document against
the real server. No 5xx, no response outside the documented statuses, types and schemas, and
schema-invalid input is refused with a 4xx.

The cases come from schemathesis' Hypothesis strategies, run by Hypothesis directly: its pytest
integration does not run on pytest 9 yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from service.settings import Settings
from testkit.services import RunningService, start_service, stop_service

pytestmark = pytest.mark.server  # the fuzzed service is started by this module's fixture

EXAMPLES_PER_OPERATION = 60
FUZZ_KEY = "fuzz-service-key"


@pytest.fixture(scope="module")
def fuzzed_service() -> Iterator[RunningService]:
    # The demo model, fast: the fuzzing is about the HTTP surface, not the upstream.
    running = start_service(
        Settings(
            _env_file=None,
            PROVIDER="demo",
            demo_tokens_per_second=10_000,
            demo_first_token_delay_seconds=0,
            max_body_bytes=64 * 1024,
            service_api_keys=FUZZ_KEY,
            docs_enabled=True,  # with keys, the document is not served unless asked for
        )
    )
    yield running
    stop_service(running)


def operations(service: RunningService) -> list[Any]:
    """Every operation of the service's OpenAPI document (an invalid document fails here)."""
    schema = schemathesis.openapi.from_url(service.base_url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def test_every_operation_is_fuzzed(fuzzed_service: RunningService) -> None:
    labels = {operation.label for operation in operations(fuzzed_service)}
    assert set(LABELS) <= labels


LABELS = [
    "POST /api/chat/stream",
    "GET /api/chat/stream",
    "GET /healthz",
    "GET /readyz",
    "POST /v1/chat/completions",
    "POST /v1/responses",
    "GET /v1/models",
    "GET /v1/models/{model}",
]


@pytest.mark.parametrize("label", LABELS)
def test_no_server_error_and_no_schema_violation(
    fuzzed_service: RunningService, label: str
) -> None:
    (operation,) = [op for op in operations(fuzzed_service) if op.label == label]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: Any) -> None:
        # positive_data_acceptance is left out on purpose: limits that depend on configuration
        # (MAX_OUTPUT_TOKENS, MAX_INPUT_CHARS) refuse some schema-valid bodies with a 422.
        # With a valid key; schemathesis also tries invalid ones and expects a 401.
        case.call_and_validate(
            base_url=fuzzed_service.base_url,
            headers={"Authorization": f"Bearer {FUZZ_KEY}"},
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
        )

    fuzz()
