"""Debian's Prometheus, running the repository's example configuration against a loopback target.

`PrometheusServer.start(target, directory)` reads `deploy/prometheus/prometheus.yml`, changes
only what a test must (the target, one-second scrape and rule intervals, the rule files' absolute
paths), and runs `/usr/bin/prometheus` as a child process with its storage in `directory`,
listening on 127.0.0.1 only; `stop` ends it by its PID. Queries go through its HTTP API:
https://prometheus.io/docs/prometheus/latest/querying/api/
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from testkit.ports import LOOPBACK, free_port
from testkit.service_process import stop_process
from testkit.waiting import wait_until

PROMETHEUS = "/usr/bin/prometheus"
DEPLOY = Path(__file__).parents[1] / "deploy"
EXAMPLE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
START_TIMEOUT_SECONDS = 20.0


def config_for(target: str) -> dict[str, Any]:
    """The example configuration, scraping `target` every second."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(EXAMPLE_CONFIG.parent / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return config


class PrometheusServer:
    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.base_url = f"http://{LOOPBACK}:{port}"
        self.log = log

    @classmethod
    def start(cls, target: str, directory: Path) -> PrometheusServer:
        if shutil.which(PROMETHEUS) is None:
            raise RuntimeError(f"{PROMETHEUS} is missing: run scripts/install-system-deps.sh")
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(config_for(target)))
        port = free_port()
        log = directory / "prometheus.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        server = cls(process, port, log)
        wait_until(lambda: process.poll() is not None or server.ready(), START_TIMEOUT_SECONDS)
        if process.poll() is None and server.ready():
            return server
        server.stop()
        raise RuntimeError(f"prometheus did not start:\n{log.read_text()}")

    def ready(self) -> bool:
        try:
            return httpx.get(self.base_url + "/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """By its PID: SIGTERM, then SIGKILL if it lingers."""
        stop_process(self.process)

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.base_url + "/api/v1/" + path, params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; fails the test if Prometheus refuses it."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float:
        """The value of a query that returns one series."""
        (series,) = self.query(expr)
        return float(series["value"][1])

    def wait_for_scrape(self, after: float, timeout: float = 15) -> None:
        """Until Prometheus holds a sample of every target taken after `after` (`time.time`)
        and, a second later, has evaluated its rules since."""

        def scraped() -> bool:
            found = self.query("min(timestamp(up))")
            return bool(found) and float(found[0]["value"][1]) > after + 1.0

        assert wait_until(scraped, timeout), f"no scrape after {after}:\n{self.log.read_text()}"


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(s["value"][1]) for s in result) if math.isfinite(v)]
