"""The app for ASGI servers: `uvicorn service.asgi:app` (configured from the environment), and
for uvicorn the connection limits of `python -m service`: `--http service.asgi:http_protocol`."""

from service.app import create_app
from service.http.server_protocol import guarded_protocol
from service.logging_config import configure_logging
from service.server import connection_limits
from service.settings import Settings

_settings = Settings()
configure_logging(_settings.log_level)
app = create_app(_settings)
http_protocol = guarded_protocol(connection_limits(_settings))
