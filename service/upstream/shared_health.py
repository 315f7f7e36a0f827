"""Deployment cooldowns shared between replicas through Redis (`UPSTREAMS` with `REDIS_URL`).

Without it each process learns on its own that a deployment fails: with P processes (replicas
times `WORKERS`) a deployment that falls over costs P requests its refusal, and a hanging one P
requests its `FAILOVER_TIMEOUT_SECONDS`, per cooldown; a 429 is met P times. With it, what one
process learns is every process's within a Redis round trip:

- a process that cools a deployment down, or sees its probe answered, says so: `HSET` of the
  deployment's state in `<REDIS_KEY_PREFIX>upstreams:health` (so that a process starting later
  reads it) and `PUBLISH` on the channel of the same name, from a task of its own: the request
  that failed never waits for Redis;
- every process subscribes to the channel from its start, reads the hash once subscribed, and
  applies what others said to its own `DeploymentHealth` (a cooldown until the same instant,
  a recovery); its own messages it skips, and a message older than what it knows of that
  deployment too.

Nothing is read from Redis per request: the router decides from memory, as without Redis.
Each replica adds up to a tenth of the remaining cooldown at random to what it is told, so the
replica that saw the failure probes first and, most of the time, tells the others the verdict
before their own cooldown ends: one probe for the fleet instead of one per process. When Redis
is unreachable each process goes on with what it learns itself (said once in the log, then
retried with backoff), as it would without `REDIS_URL`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.settings import Settings
from service.upstream.health import JITTER, DeploymentHealth

logger = logging.getLogger("service.upstream")
_MAX_BACKOFF_SECONDS = 30.0


class SharedHealth:
    """Publishes this process's changes of deployment health, applies the other processes'."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self._url = settings.redis_url.get_secret_value()
        self._timeout = settings.redis_timeout_seconds
        self._channel = self._key = settings.redis_key_prefix + "upstreams:health"
        # A state outlives its cooldown by this much at most: no stale cooldown is read later.
        self._ttl_ms = int(settings.upstream_max_cooldown_seconds * 2000)
        self.replica = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self._healths: dict[str, DeploymentHealth] = {}
        # The wall time of the newest news of each deployment, told or applied.
        self._news_at: dict[str, float] = {}
        self._redis: redis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._failing = False
        # Tests and operators read these.
        self.published = 0
        self.applied = 0

    def watch(self, healths: dict[str, DeploymentHealth]) -> None:
        self._healths = healths

    async def start(self) -> None:
        self._redis = redis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name="upstream health listener"
        )

    async def aclose(self) -> None:
        tasks = [*self._sending, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    # -- telling ---------------------------------------------------------------------------

    def publish(self, health: DeploymentHealth) -> None:
        """`DeploymentHealth`'s `on_change`: a cooldown began here, or a probe was answered."""
        if self._redis is None:
            return
        now = time.time()
        self._news_at[health.name] = now
        loop = asyncio.get_running_loop()
        cooling = health.state in ("cooling_down", "broken")
        message = {
            "replica": self.replica,
            "deployment": health.name,
            "at": now,
            "state": "cooling" if cooling else "healthy",
            "until": now + (health.until - loop.time()) if cooling else 0.0,
            "failures": health.failures,
            "reason": health.reason,
        }
        task = loop.create_task(self._send(health.name, json.dumps(message)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, deployment: str, message: str) -> None:
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._key, deployment, message)
        pipe.pexpire(self._key, self._ttl_ms)
        pipe.publish(self._channel, message)
        try:
            await pipe.execute()
        except RedisError as error:
            self._unreachable(error)
            return
        self.published += 1

    # -- listening ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Subscribed for as long as the process runs; resubscribes with backoff."""
        failures = 0
        while True:
            try:
                await self._follow()
            except RedisError as error:
                self._unreachable(error)
                failures += 1
                await asyncio.sleep(min(_MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 6)))

    async def _follow(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            # Subscribed first, then the hash: nothing said in between is missed.
            for raw in (await self._redis.hgetall(self._key)).values():
                self._apply(raw)
            self._failing = False
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self._apply(message["data"])
        finally:
            try:
                async with asyncio.timeout(1):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (TimeoutError, RedisError):
                pass

    def _apply(self, raw: bytes | str) -> None:
        try:
            message: dict[str, Any] = json.loads(raw)
            name = str(message["deployment"])
            at = float(message["at"])
            cooling = message["state"] == "cooling"
            until = float(message["until"])
            failures = int(message["failures"])
            reason = str(message["reason"])
            replica = message["replica"]
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable upstream health message in Redis; ignored")
            return
        health = self._healths.get(name)
        if health is None or replica == self.replica or at <= self._news_at.get(name, 0.0):
            return  # another configuration's deployment, this process's own news, or old news
        self._news_at[name] = at
        self.applied += 1
        if not cooling:
            health.shared_recovery()
            return
        remaining = until - time.time()
        if remaining <= 0:
            return
        remaining *= 1 + JITTER * random.random()  # noqa: S311 (spreads the probes)
        health.shared_cooldown(asyncio.get_running_loop().time() + remaining, failures, reason)

    def _unreachable(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "upstream health: Redis unreachable (%s); cooldowns are this process's own "
                "until it is back",
                error,
            )
