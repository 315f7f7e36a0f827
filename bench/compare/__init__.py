"""The side-by-side benchmark: the service against LiteLLM, a tutorial relay and the floor.

    make bench-compare            # the full run, for bench/compare.md (docs/performance.md)
    python -m bench.compare --quick

Modules, in the order data flows: `targets` (what is compared, one entry each), `plan` (the
levels and bounds), `gateways` (starting each one pinned to a core), `load` (the streaming
client), `stats` (figures from observations), `sweep` (capacity), `report` and `plot` (Markdown
and PNG), `profile` (py-spy), `run` (one run, start to stop), `relays` (the tutorial relay and
the floor).
"""
