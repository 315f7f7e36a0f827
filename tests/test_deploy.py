"""The Kubernetes manifests (`deploy/k8s/`) agree with the service they deploy.

`make check-deploy` validates them against the Kubernetes API's schemas; these check what a
schema cannot: the termination grace period covers the preStop sleep, the shutdown grace and
uvicorn's backstop; the probes and the scrape annotation name the service's real paths and port;
the kustomization lists every manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.app import create_app
from testkit.services import make_settings

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
# `python -m service` sets uvicorn's graceful timeout this much above the shutdown grace.
UVICORN_BACKSTOP_SECONDS = 5


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return loaded


def test_the_termination_grace_period_covers_prestop_shutdown_grace_and_backstop() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    prestop = float(command[1])
    grace = float(manifest("configmap.yaml")["data"]["SHUTDOWN_GRACE_SECONDS"])
    # Kubernetes counts the period from the start of preStop; SIGTERM comes after it.
    needed = prestop + grace + UVICORN_BACKSTOP_SECONDS
    assert needed < pod["terminationGracePeriodSeconds"] <= needed + 15


def test_probes_and_scraping_name_the_services_own_paths_and_port() -> None:
    deployment = manifest("deployment.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port = int(manifest("configmap.yaml")["data"]["PORT"])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    routes = set(create_app(make_settings()).openapi()["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= routes
    service = manifest("service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(manifest("kustomization.yaml")["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
