"""Resumable streams across replicas, on Redis Streams (issue #13); used only with REDIS_URL.

    routes ─▶ chat (events) ─▶ hub.produce ─▶ Producer task ─▶ memory ─▶ the original client
                                                   └──▶ writer ─▶ Redis (store.py)
    resume on any replica ─▶ hub.respond ─▶ memory (producer here) or Redis ─▶ encoder ─▶ client

`codec` packs response events for the store, `store` is the only module importing `redis`,
`producer` runs one stream and its local followers, `hub` ties them together per replica, and
`routes` adds the resume and stop endpoints.
"""
