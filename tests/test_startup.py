"""What `python -m service`'s app does once started (`service.workers.create_served_app`)."""

from __future__ import annotations

import gc
import logging

from service.app import create_app
from service.workers import create_served_app
from testkit.services import make_settings


async def test_the_served_app_freezes_what_its_startup_left_alive() -> None:
    """Startup's objects leave the garbage collector's sight (`gc.freeze`), so that the first
    full collections under load do not walk them (issue #16)."""
    flags = logging._srcfile, logging.logThreads, logging.logProcesses  # configured below
    app = create_served_app()  # the environment: no key, the demo model
    try:
        before = gc.get_freeze_count()
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
        logging.getLogger("service").handlers.clear()  # create_served_app configured them
        logging._srcfile, logging.logThreads, logging.logProcesses = flags


async def test_an_app_built_in_process_freezes_nothing() -> None:
    app = create_app(make_settings())
    before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == before
