"""Provider selection, start-up validation, and the one-command start with no key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.settings import Settings
from testkit.service_process import (
    run_service_until_exit,
    start_service_process,
    stream_outcomes,
)
from testkit.services import TEST_KEY, make_settings
from testkit.sse_client import answer_text, read_events


def test_nothing_configured_means_demo() -> None:
    assert make_settings().provider == "demo"


def test_openai_key_or_base_url_means_openai() -> None:
    assert make_settings(openai_api_key="k").provider == "openai"
    assert make_settings(openai_base_url="http://localhost:11434/v1").provider == "openai"


def test_azure_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="AZURE_OPENAI_API_KEY"):
        make_settings(azure_openai_endpoint="https://x.openai.azure.com")


def test_azure_key_needs_its_endpoint() -> None:
    with pytest.raises(ValidationError, match="AZURE_OPENAI_ENDPOINT"):
        make_settings(azure_openai_api_key="k")


def test_two_providers_must_be_chosen_between() -> None:
    with pytest.raises(ValidationError, match="PROVIDER"):
        make_settings(
            openai_api_key="k", azure_openai_endpoint="https://x", azure_openai_api_key="k"
        )


def test_provider_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER", "demo")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert make_settings().provider == "demo"


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_BASE_URL=http://localhost:8080/v1\nDEFAULT_MODEL=llama3\n"
    )
    monkeypatch.chdir(tmp_path)
    from service.settings import Settings

    settings = Settings()
    assert settings.provider == "openai"
    assert settings.model_name == "llama3"


@pytest.mark.server
@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}, "AZURE_OPENAI_API_KEY"),
        ({"PORT": "not-a-port"}, "PORT"),
        ({"HEARTBEAT_SECONDS": "0"}, "HEARTBEAT_SECONDS"),
        ({"WORKERS": "0"}, "WORKERS"),
    ],
)
def test_misconfiguration_fails_at_start_naming_the_variable(
    tmp_path: Path, environment: dict[str, str], named: str
) -> None:
    result = run_service_until_exit(tmp_path, **environment)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.server
def test_misconfiguration_never_prints_a_key(tmp_path: Path) -> None:
    result = run_service_until_exit(tmp_path, AZURE_OPENAI_API_KEY=TEST_KEY)
    assert result.returncode == 2
    assert "AZURE_OPENAI_ENDPOINT" in result.stderr
    assert TEST_KEY not in result.stderr + result.stdout


@pytest.mark.server
def test_python_m_service_streams_the_demo_answer_with_no_key(tmp_path: Path) -> None:
    process, base = start_service_process(
        tmp_path, DEMO_TOKENS_PER_SECOND="500", DEMO_FIRST_TOKEN_DELAY_SECONDS="0"
    )
    try:
        health = httpx.get(base + "/healthz")
        assert health.json()["provider"] == "demo"
        assert health.json()["demo"] is True
        response = httpx.post(
            base + "/api/chat/stream", json={"message": "What is this?"}, timeout=30
        )
        assert response.status_code == 200
        events = read_events(response)
        assert 'You asked: "What is this?".' in answer_text(events)
        assert len(events) > 20
        assert events[-2].json()["finish_reason"] == "stop"
        assert events[-1].data == "[DONE]"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "demo model" in stderr
    assert stream_outcomes(stderr) == [("completed", None)]


def test_every_setting_is_in_the_env_example() -> None:
    # docs/configuration.md lists them too: tests/test_docs_configuration.py (issue #18).
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        variable = (field.alias or name).upper()
        assert f"# {variable}=" in example, variable
