"""The side-by-side benchmark: the service against LiteLLM, a tutorial relay and the floor.

    make bench-compare            # the full run, for the README's figures
    python -m bench.compare --quick

Modules, in the order data flows: `targets` (what is compared, one entry each), `gateways`
(starting each one pinned to a core), `load` (the streaming client), `stats` (figures from
observations), `report` and `plot` (Markdown and PNG), `run` (one run, start to stop).
"""
