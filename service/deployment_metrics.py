"""Prometheus metrics of the router over several deployments (`UPSTREAMS`, issue #17): a
`RouterObserver` (`service.upstream.router`) whose instruments live in the service's registry,
so `/metrics` shows them beside the stream metrics (`service.prometheus_metrics`).

    llm_upstream_requests_total{deployment}          requests sent to each deployment, the
                                                     ones that failed over included
    llm_upstream_failovers_total{deployment,reason}  requests that moved from a deployment
                                                     to another before their first token, by
                                                     reason (`service.upstream.health.REASONS`);
                                                     the last one's failure, with no other
                                                     left to try, is no failover
    llm_upstream_in_flight{deployment}               requests at each deployment now
    llm_upstream_deployment_state{deployment,state}  1 for each deployment's state (healthy,
                                                     cooling_down, broken, probe, probing)

Label values are bounded: deployments are the configuration's names, reasons and states fixed
sets. Under several workers the gauges are summed over the live ones: a state's value is then
the number of workers that see the deployment in it (with `REDIS_URL`, all of them). Without
`UPSTREAMS` none of these exist. Per request: a counter and two gauge updates, on children
looked up once, at start.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.upstream.health import REASONS, STATES, State


class DeploymentMetrics:
    def __init__(self, registry: CollectorRegistry, deployments: Sequence[str]) -> None:
        self.requests = Counter(
            "llm_upstream_requests",
            "Requests sent to each upstream deployment (UPSTREAMS), failed over or not",
            ("deployment",),
            registry=registry,
        )
        self.failovers = Counter(
            "llm_upstream_failovers",
            "Requests that moved from an upstream deployment to another before their first "
            "token, by reason",
            ("deployment", "reason"),
            registry=registry,
        )
        self.in_flight = Gauge(
            "llm_upstream_in_flight",
            "Requests at each upstream deployment now, summed over the workers",
            ("deployment",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.state = Gauge(
            "llm_upstream_deployment_state",
            "1 for each upstream deployment's state (summed over the workers: how many see it so)",
            ("deployment", "state"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._requests = {name: self.requests.labels(name) for name in deployments}
        self._in_flight = {name: self.in_flight.labels(name) for name in deployments}
        self._failovers = {
            (name, reason): self.failovers.labels(name, reason)
            for name in deployments
            for reason in REASONS
        }
        self._states = {
            (name, state): self.state.labels(name, state)
            for name in deployments
            for state in STATES
        }

    def sent(self, deployment: str) -> None:
        self._requests[deployment].inc()
        self._in_flight[deployment].inc()

    def ended(self, deployment: str) -> None:
        self._in_flight[deployment].dec()

    def failed_over(self, deployment: str, reason: str) -> None:
        self._failovers[deployment, reason].inc()

    def state_changed(self, deployment: str, state: State) -> None:
        for each in STATES:
            self._states[deployment, each].set(1 if each == state else 0)
