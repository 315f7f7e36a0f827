"""The app for ASGI servers: `uvicorn service.asgi:app` (configured from the environment)."""

from service.app import create_app
from service.logging_config import configure_logging
from service.settings import Settings

_settings = Settings()
configure_logging(_settings.log_level)
app = create_app(_settings)
