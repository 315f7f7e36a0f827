"""The fake upstream as its own process, so benchmarks measure only the process under test.

    python -m bench.upstream_server TOKENS PAUSE_SECONDS [STATUS]

Answers every request with TOKENS one-token events (plus finish, usage and [DONE]) byte for
byte as OpenAI writes them (`testkit.openai_fakes.openai_pieces`); with a pause of 0 the whole
body goes out in one write, otherwise each event is its own write, PAUSE_SECONDS apart. With a
STATUS (503, say), every request is refused with it and an OpenAI error body instead. Prints
the port on the first line of stdout, then serves until killed.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from testkit.fake_upstream import FakeUpstream, Reply, error_body
from testkit.openai_fakes import openai_pieces
from testkit.service_process import stop_process


def main() -> None:
    tokens, pause = int(sys.argv[1]), float(sys.argv[2])
    pieces = openai_pieces([f" w{i}" for i in range(tokens)])
    fake = FakeUpstream()
    fake.default_reply = (
        Reply(pieces=pieces, pause=pause) if pause else Reply(pieces=[b"".join(pieces)])
    )
    if len(sys.argv) > 3:
        status = int(sys.argv[3])
        fake.default_reply = Reply(status=status, body=error_body("refused", "server_error"))
    fake.start()
    print(fake.port, flush=True)
    threading.Event().wait()


class UpstreamProcess:
    """Start `main` in a child process; `base_url` once it listens.

    `paced=True` starts `bench.paced_upstream` instead (same arguments): the lean server that
    keeps its schedule under hundreds of streams and records disconnects. `status` makes it
    refuse every request with that status (not with `paced`).
    """

    def __init__(
        self, tokens: int, pause: float, *, paced: bool = False, status: int | None = None
    ) -> None:
        module = "bench.paced_upstream" if paced else "bench.upstream_server"
        refuse = [] if status is None else [str(status)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, str(tokens), str(pause), *refuse],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout:
            self.process.stdout.close()


if __name__ == "__main__":
    main()
