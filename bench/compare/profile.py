"""Where a gateway's CPU goes under load: py-spy sampling it during one level.

    python -m bench.compare --targets "service /api/chat/stream" --profile 100

py-spy (from PyPI, in the bench extra) attaches to the gateway's PID and samples the Python
stack holding the GIL while the level runs (so every sample is CPU spent in Python, or in C
called from it: a socket write shows as the frame that wrote). It writes collapsed stacks
(`frame;frame;... count`, one line per distinct stack), which `fold` sums into the functions
holding the most samples, by themselves and with everything they call. The file also loads
into speedscope or inferno for a flame graph.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")

# Parts of a relay's path, each recognised by a piece of a frame's name: a sample counts for
# the first part any frame of its stack matches (so a write under the send loop is "send").
PARTS = [
    (
        "SDK request: create() until the response headers",
        ("AsyncResponseContextManager.__aenter__",),
    ),
    ("socket write to the client (uvicorn send)", ("RequestResponseCycle.send",)),
    ("logging", ("(logging/",)),
    ("parsing each chunk, picking its fields", ("chunk_events", "chat_chunk", "(json/", "msgspec")),
    ("SDK typed stream (its reads, parsing, a model per token)", ("(openai/_streaming",)),
    (
        "upstream read: aiohttp protocol and reader, SDK/httpx2 adapters",
        ("(aiohttp/", "aiter_raw", "aiter_bytes", "BoundAsyncStream", "iter_bytes", "iter_any"),
    ),
    ("SSE decode", ("SSEDecoder",)),
    ("SSE encode", ("(service/wire/sse.py)", "ServerSentEvent.encode")),
    (
        "route, validation, dependencies",
        ("(fastapi/routing", "(fastapi/dependencies", "(pydantic", "Request.body", "Request.json"),
    ),
    ("uvicorn request parsing and connections", ("(uvicorn/protocols/http/httptools_impl.py)",)),
]


def py_spy() -> str | None:
    """py-spy beside this Python (the venv's), else on PATH."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Recording:
    """py-spy recording `pid` into `path` until `stop`."""

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        command = py_spy()
        if command is None:
            raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
        self.path = path
        # --gil: only samples of the thread holding the GIL, so a thread pool waiting on its
        # queue (which py-spy may not see as idle) does not count as CPU.
        options = ["--rate", str(rate), "--gil", "--format", "raw", "--function"]
        options += ["--output", str(path)]
        self.process = subprocess.Popen(
            [command, "record", "--pid", str(pid), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """End the recording (py-spy writes its file on SIGINT)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _frames(stack: str) -> list[str]:
    """The Python frames of one collapsed stack, without line numbers or process/thread."""
    parts = stack.split(";")
    return [_LINE.sub(")", part) for part in parts if " (" in part and part.endswith(")")]


def fold(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, samples per function on top of the stack, per function anywhere in it)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = _frames(stack)
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, own, inclusive


def by_part(collapsed: str) -> Counter[str]:
    """Samples per part of the path (`PARTS`); the rest under "other"."""
    parts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = _frames(stack)
        part = next(
            (name for name, marks in PARTS if any(m in f for f in frames for m in marks)),
            "other: event loop, generator layers, the service's own glue",
        )
        parts[part] += int(number)
    return parts


def render(title: str, collapsed: str, count: int = 25) -> str:
    total, own, inclusive = fold(collapsed)
    if not total:
        return f"## {title}\n\nNo samples.\n"
    lines = [f"## {title}", "", f"{total} samples holding the GIL.", ""]
    lines += ["| part of the path | samples |", "|---|--:|"]
    lines += [
        f"| {part} | {samples / total:.1%} |" for part, samples in by_part(collapsed).most_common()
    ]
    lines += [""]
    lines += ["Most samples with everything they call:", "", "| function | inclusive | own |"]
    lines += ["|---|--:|--:|"]
    lines += [
        f"| `{frame}` | {samples / total:.1%} | {own[frame] / total:.1%} |"
        for frame, samples in inclusive.most_common(count)
    ]
    lines += ["", "Most samples in the function itself:", "", "| function | own |", "|---|--:|"]
    lines += [f"| `{frame}` | {samples / total:.1%} |" for frame, samples in own.most_common(count)]
    return "\n".join(lines) + "\n"
