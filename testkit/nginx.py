"""Debian's nginx as a stock reverse proxy in front of a loopback port, for tests and benchmarks.

`NginxProxy.start(backend_port)` writes a config into a private directory and runs
`/usr/sbin/nginx` as a child process (not a daemon), so it is stopped by its own PID and nothing
of it outlives the test. The proxy is deliberately *stock*: the only proxy directive is
`proxy_pass`, so nginx keeps its defaults, the ones a deployment gets when nobody tuned it:

- `proxy_buffering on`: nginx reads the upstream's answer into buffers and only passes it on as
  buffers fill, unless the upstream sends `X-Accel-Buffering: no`
  (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering);
- `proxy_http_version 1.0` and `Connection: close` to the upstream
  (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_http_version);
- `proxy_read_timeout 60s`.

So a test that streams through it proves the service's own headers are enough for a default
nginx. `location_extra` adds directives to the `location` for control experiments, for example
`proxy_ignore_headers X-Accel-Buffering;` to see what a stream without the header would get
(https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ignore_headers). `locations`
replaces the stock `location /` with the caller's own blocks (the web server of a built frontend:
static files, and `/api/` proxied with the settings of docs/operations.md); `{backend}` in it is the
backend's URL. `more_backends` puts several replicas behind it, balanced round-robin.

Everything nginx writes (pid, logs, temp files, lock) stays inside the directory, it listens on
127.0.0.1 only, and it works both as root (`user root;`, so the worker does not switch to an
account that cannot read the directory) and as a normal user (no `user` directive at all).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from testkit.ports import free_port, wait_until_listening

NGINX = "/usr/sbin/nginx"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


STOCK_LOCATIONS = """\
        location / {{
            # Stock proxying: https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_pass
            proxy_pass {{backend}};
            {location_extra}
        }}"""


def render_config(
    directory: Path,
    listen_port: int,
    backend_port: int,
    location_extra: str,
    locations: str | None = None,
    more_backends: Sequence[int] = (),
) -> str:
    """The whole nginx.conf: one server with `locations`, by default one `location /` that only
    does `proxy_pass`; with `more_backends`, to an `upstream` group that nginx balances
    round-robin, its default, with no stickiness
    (https://nginx.org/en/docs/http/ngx_http_upstream_module.html#upstream)."""
    backend, group = f"http://127.0.0.1:{backend_port}", ""
    if more_backends:
        servers = "".join(f"server 127.0.0.1:{port}; " for port in (backend_port, *more_backends))
        backend, group = "http://backends", f"upstream backends {{ {servers}}}"
    blocks = (locations or STOCK_LOCATIONS.format(location_extra=location_extra)).replace(
        "{backend}", backend
    )
    # As root the worker would switch to the compiled-in user (`nobody`), which may not be able
    # to read the temp directory: https://nginx.org/en/docs/ngx_core_module.html#user. As a
    # normal user the directive would only log a warning, so it is left out.
    user = "user root;\n" if os.geteuid() == 0 else ""
    d = directory
    return f"""\
{user}worker_processes 1;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    # Which backend served each request, and the Last-Event-ID it carried (resume tests).
    log_format served '$request_method $request_uri $status "$http_last_event_id" $upstream_addr';
    access_log {d}/access.log served;
    # Debian's compiled-in temp paths are under /var/lib/nginx; keep them private.
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {group}
    server {{
        listen 127.0.0.1:{listen_port};
{blocks}
    }}
}}
"""


class NginxProxy:
    """One running nginx; `base_url` is where it listens. Use `start`, then `stop`."""

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """One line per request logged so far: method, URI, status, the Last-Event-ID header
        in quotes ("-" if none), and the backend that served it (`host:port`)."""
        path = self.directory / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def served_by(self) -> list[str]:
        """The backend address (`host:port`) of each request logged so far, in order."""
        return [line.rsplit(" ", 1)[-1] for line in self.access_log()]

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @classmethod
    def start(
        cls,
        backend_port: int,
        *,
        location_extra: str = "",
        locations: str | None = None,
        directory: Path | None = None,
        more_backends: Sequence[int] = (),
    ) -> NginxProxy:
        """Start nginx proxying to `backend_port`; returns once its port accepts connections.

        Raises `RuntimeError` with nginx's own error log if it exits or does not listen within
        `START_TIMEOUT_SECONDS`, or naming the install script if nginx is missing (an error, not
        a skip). A port taken between choosing and binding it is retried.
        """
        if shutil.which(NGINX) is None:
            raise RuntimeError(f"{NGINX} is missing: run scripts/install-system-deps.sh")
        root = directory or Path(tempfile.mkdtemp(prefix="nginx-proxy-"))
        failure = ""
        for attempt in range(3):
            work = root / f"run{attempt}"
            work.mkdir(parents=True)
            port = free_port()
            config = work / "nginx.conf"
            config.write_text(
                render_config(work, port, backend_port, location_extra, locations, more_backends)
            )
            # -p: prefix for relative paths; -e: the error log used before the config is read;
            # daemon off keeps nginx our child: https://nginx.org/en/docs/ngx_core_module.html#daemon
            process = subprocess.Popen(
                [NGINX, "-p", work, "-c", config, "-e", work / "error.log", "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers share its process group, see `stop`
            )
            proxy = cls(work, port, process)
            if wait_until_listening(port, START_TIMEOUT_SECONDS, alive=proxy.running):
                return proxy
            failure = proxy.error_log()
            proxy.stop()
            if "Address already in use" not in failure:
                break
        raise RuntimeError(f"nginx did not start:\n{failure}")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop nginx by its PID: SIGTERM (fast shutdown, workers exit with the master), wait,
        then SIGKILL its process group (the master and its workers, nothing else) if needed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_SECONDS)


# `start(backend_port, location_extra="", locations=None) -> base_url`: the tests' fixture.
NginxFactory = Callable[..., str]
