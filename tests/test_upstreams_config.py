"""`UPSTREAMS` and `UPSTREAMS_FILE` (issue #17): what an entry may say, what each deployment is
built from, and the start-up refusals, which name the entry and the field and never a key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.__main__ import describe_configuration_error
from service.settings import Settings
from testkit.doc_examples import ROOT
from testkit.service_process import run_service_until_exit
from testkit.services import TEST_KEY, make_settings

UPSTREAMS_PAGE = ROOT / "docs" / "upstreams.md"


def routed(*entries: dict[str, Any], **settings: Any) -> Settings:
    return make_settings(upstreams=json.dumps(list(entries)), **settings)


def refusal(**settings: Any) -> str:
    """The start-up error the settings give (what `python -m service` prints)."""
    with pytest.raises(ValidationError) as raised:
        make_settings(**settings)
    return describe_configuration_error(raised.value)


def refusal_of(*entries: Any, **settings: Any) -> str:
    return refusal(upstreams=json.dumps(list(entries)), **settings)


LOCAL = {"name": "local", "base_url": "http://127.0.0.1:9/v1"}


def test_upstreams_select_the_router_and_keep_the_default_model() -> None:
    settings = routed(LOCAL, {"provider": "demo"}, default_model="gpt-4o")
    assert settings.provider == "upstreams"
    assert settings.model_name == "gpt-4o"
    assert [d.name for d in settings.deployments] == ["local", "deployment-1"]
    assert [d.provider for d in settings.deployments] == ["openai", "demo"]


def test_without_upstreams_there_are_no_deployments() -> None:
    assert make_settings(openai_api_key="k").deployments == ()


def test_an_openai_entry_becomes_the_single_upstreams_settings() -> None:
    (deployment,) = routed(
        {**LOCAL, "api_key": TEST_KEY, "weight": 2.5, "max_concurrent": 7}
    ).deployments
    own = deployment.settings
    assert own.provider == "openai"
    assert own.openai_base_url == "http://127.0.0.1:9/v1"
    assert own.openai_api_key is not None
    assert own.openai_api_key.get_secret_value() == TEST_KEY
    assert own.upstreams is None
    assert (deployment.weight, deployment.max_concurrent) == (2.5, 7)
    assert deployment.models is None
    assert deployment.serves("anything")
    assert deployment.model_for("x") == "x"


def test_an_azure_entry_maps_models_to_its_deployment_names() -> None:
    (deployment,) = routed(
        {
            "name": "eastus",
            "provider": "azure",
            "base_url": "https://east.openai.azure.com",
            "api_key": TEST_KEY,
            "api_version": "2025-03-01-preview",
            "models": {"gpt-4o": "gpt-4o-east"},
        }
    ).deployments
    own = deployment.settings
    assert own.provider == "azure"
    assert own.azure_openai_endpoint == "https://east.openai.azure.com"
    assert own.azure_openai_api_version == "2025-03-01-preview"
    assert own.openai_base_url is None
    assert deployment.serves("gpt-4o")
    assert not deployment.serves("gpt-4o-mini")
    assert deployment.model_for("gpt-4o") == "gpt-4o-east"


def test_a_models_list_serves_those_models_by_their_names() -> None:
    (deployment,) = routed({**LOCAL, "models": ["a", "b"]}).deployments
    assert deployment.models == {"a": "a", "b": "b"}


def test_model_names_of_200_characters_are_accepted_on_both_sides() -> None:
    (deployment,) = routed({**LOCAL, "models": {"m" * 200: "d" * 200}}).deployments
    assert deployment.models == {"m" * 200: "d" * 200}


def test_the_listed_models_are_named_in_metrics() -> None:
    settings = routed({**LOCAL, "models": {"gpt-4o": "gpt-4o-east"}}, metrics_models="m")
    assert settings.metrics_model_names == {"gpt-4o-mini", "m", "gpt-4o"}


def test_api_key_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASTUS_KEY", TEST_KEY)
    (deployment,) = routed({**LOCAL, "api_key_env": "EASTUS_KEY"}).deployments
    assert deployment.settings.openai_api_key is not None
    assert deployment.settings.openai_api_key.get_secret_value() == TEST_KEY


def test_api_key_env_may_name_the_services_own_key_setting() -> None:
    """OPENAI_API_KEY as the service reads it (from `.env` too), and the router is still
    chosen although that variable alone would select the OpenAI provider."""
    settings = routed({**LOCAL, "api_key_env": "OPENAI_API_KEY"}, openai_api_key=TEST_KEY)
    assert settings.provider == "upstreams"
    key = settings.deployments[0].settings.openai_api_key
    assert key is not None
    assert key.get_secret_value() == TEST_KEY


def test_the_sdk_retries_only_a_lone_deployment() -> None:
    """With somewhere else to go, the next deployment answers sooner than the same one after a
    backoff; an entry may still ask for them."""
    several = routed(LOCAL, {**LOCAL, "name": "b", "max_retries": 3}, upstream_max_retries=2)
    assert [d.settings.upstream_max_retries for d in several.deployments] == [0, 3]
    (alone,) = routed(LOCAL, upstream_max_retries=2).deployments
    assert alone.settings.upstream_max_retries == 2


def test_the_failover_timeout_defaults_to_the_setting() -> None:
    settings = routed(
        LOCAL, {**LOCAL, "name": "b", "failover_timeout_seconds": 40}, failover_timeout_seconds=9
    )
    assert [d.failover_timeout_seconds for d in settings.deployments] == [9, 40]


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([], "UPSTREAMS must be a non-empty list"),
        ([{**LOCAL, "base_ur": "x"}], "UPSTREAMS[0] 'local': base_ur: Extra inputs are not"),
        ([LOCAL, {"name": "b", "weight": 0}], "UPSTREAMS[1] 'b': weight: Input should be greater"),
        ([{**LOCAL, "max_concurrent": 0}], "UPSTREAMS[0] 'local': max_concurrent:"),
        ([{**LOCAL, "provider": "bedrock"}], "UPSTREAMS[0] 'local': provider must be one of"),
        ([{"provider": "azure", "api_key": "k"}], "UPSTREAMS[0] 'deployment-0': base_url is req"),
        (
            [{"name": "e", "provider": "azure", "base_url": "https://e.openai.azure.com"}],
            "UPSTREAMS[0] 'e': api_key or api_key_env is required for provider azure",
        ),
        ([{"name": "o"}], "UPSTREAMS[0] 'o': give base_url"),
        ([{**LOCAL, "base_url": "ftp://x"}], "UPSTREAMS[0] 'local': base_url: String should"),
        ([{**LOCAL, "api_version": "2024-10-21"}], "api_version is for provider azure only"),
        ([{**LOCAL, "models": []}], "UPSTREAMS[0] 'local': models is empty"),
        ([{**LOCAL, "models": ["m" * 201]}], "'local': models: every name must be 1 to 200"),
        ([{**LOCAL, "models": {"gpt-4o": ""}}], "'local': models: every name must be 1 to 200"),
        (
            [{**LOCAL, "models": {"gpt-4o": "d" * 300}}],
            "UPSTREAMS[0] 'local': models: every name must be 1 to 200 characters",
        ),
        ([LOCAL, LOCAL], "UPSTREAMS[1]: name 'local' is also the name of entry 0"),
        ([{**LOCAL, "api_key_env": "NOT_SET_ANYWHERE"}], "names NOT_SET_ANYWHERE, which is not"),
        (["just a string"], "UPSTREAMS[0]: Input should be a valid dictionary"),
    ],
)
def test_a_mistake_names_the_entry_and_the_field(entries: list[Any], named: str) -> None:
    assert named in refusal_of(*entries)


def test_both_a_key_and_its_variable_is_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "k")
    assert "give api_key or api_key_env, not both" in refusal_of(
        {**LOCAL, "api_key": TEST_KEY, "api_key_env": "K"}
    )


def test_no_refusal_repeats_a_key() -> None:
    for message in (
        refusal(upstreams='[{"name": "a", "api_key": "' + TEST_KEY + '", }]'),  # not JSON
        refusal_of({**LOCAL, "api_key": TEST_KEY, "weight": -1}),
        refusal_of({**LOCAL, "api_key": TEST_KEY, "api_key_env": "X"}),
        refusal_of({**LOCAL, "api_key": [TEST_KEY]}),
    ):
        assert "UPSTREAMS" in message
        assert TEST_KEY not in message


def test_json_syntax_errors_say_where() -> None:
    assert "UPSTREAMS is not valid JSON: " in refusal(upstreams="[{")
    assert "at line 1 column 3" in refusal(upstreams="[{")


def test_upstreams_replace_the_single_upstreams_address() -> None:
    assert "unset OPENAI_BASE_URL" in refusal_of(LOCAL, openai_base_url="http://x/v1")
    assert "unset AZURE_OPENAI_ENDPOINT" in refusal_of(
        LOCAL, azure_openai_endpoint="https://x", azure_openai_api_key="k"
    )


def test_provider_must_not_name_another_beside_upstreams() -> None:
    assert "PROVIDER must be auto or upstreams" in refusal_of(
        LOCAL, PROVIDER="openai", openai_api_key="k"
    )
    assert "PROVIDER=upstreams needs UPSTREAMS" in refusal(PROVIDER="upstreams")


def test_a_yaml_file_lists_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEST_KEY", TEST_KEY)
    path = tmp_path / "upstreams.yaml"
    path.write_text(
        "- name: west\n"
        "  provider: azure\n"
        "  base_url: https://west.openai.azure.com\n"
        "  api_key_env: WEST_KEY\n"
        "  models: {gpt-4o: gpt-4o-west}\n"
        "- name: local\n"
        "  base_url: http://127.0.0.1:9/v1\n"
    )
    settings = make_settings(upstreams_file=path)
    assert [d.name for d in settings.deployments] == ["west", "local"]


def test_a_json_file_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([LOCAL]))
    assert [d.name for d in make_settings(upstreams_file=path).deployments] == ["local"]


def test_a_broken_yaml_file_says_where_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.yaml"
    path.write_text(f"- name: a\n  api_key: {TEST_KEY}\n  base_url: [unclosed\n")
    message = refusal(upstreams_file=path)
    assert f"UPSTREAMS_FILE ({path}) is not valid YAML" in message
    assert re.search(r"at line \d+ column \d+", message)
    assert TEST_KEY not in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert "cannot be read: No such file" in refusal(upstreams_file=tmp_path / "none.yaml")


def test_the_list_comes_from_one_place_only(tmp_path: Path) -> None:
    path = tmp_path / "u.json"
    path.write_text(json.dumps([LOCAL]))
    assert "set UPSTREAMS or UPSTREAMS_FILE, not both" in refusal_of(LOCAL, upstreams_file=path)


def yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_documented_azure_example_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs page's YAML, read as the service reads it, with its keys' variables set."""
    (example,) = [block for block in yaml_blocks(UPSTREAMS_PAGE) if "provider: azure" in block]
    for variable in re.findall(r"api_key_env: (\w+)", example):
        monkeypatch.setenv(variable, "key-for-the-example")
    path = tmp_path / "upstreams.yaml"
    path.write_text(example)
    deployments = make_settings(upstreams_file=path, default_model="gpt-4o").deployments
    assert len(deployments) == 2
    assert {d.provider for d in deployments} == {"azure"}
    assert all(d.serves("gpt-4o") for d in deployments)


@pytest.mark.server
def test_python_m_service_refuses_a_bad_entry_naming_it(tmp_path: Path) -> None:
    entries = [LOCAL, {"name": "west", "api_key": TEST_KEY, "weight": "heavy"}]
    result = run_service_until_exit(tmp_path, UPSTREAMS=json.dumps(entries))
    assert result.returncode == 2
    assert "UPSTREAMS[1] 'west': weight: Input should be a valid number" in result.stderr
    assert TEST_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
