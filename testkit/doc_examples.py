"""The fenced code blocks of the documentation, as tests/test_docs_examples.py runs them
(issue #18).

A block is marked by an HTML comment on the line just before its opening fence, which neither
GitHub nor the site shows:

    <!-- example: NAME -->      the tests run it; NAME says what they check its output for
    <!-- not-run: REASON -->    the tests leave it, for the reason given

A shell, Python or JavaScript block carries one of the two (`unmarked` lists those that do
not), so that no example that talks to the service goes untested by accident. A TypeScript
block instead consists of pymdownx.snippets lines only: it is included from the frontend's
sources, which vitest and Chromium test, so it cannot drift from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The documentation: the README, ARCHITECTURE.md, and the site's pages.
DOCUMENTS = ("README.md", "ARCHITECTURE.md", "docs")
# Languages whose blocks must be marked; `ts` and `tsx` blocks must be includes instead.
MARKED_LANGUAGES = frozenset({"sh", "bash", "shell", "console", "python", "py", "js", "mjs"})
INCLUDED_LANGUAGES = frozenset({"ts", "tsx", "typescript"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<language>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>example|not-run):\s*(?P<value>.*?)\s*-->\s*$")
_SNIPPET_LINE = re.compile(r'^\s*-+8<-+\s+"[^"]+"\s*$')


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its code (the fence's indentation taken
    off), and its marker, if it has one."""

    path: str
    line: int
    language: str
    code: str
    example: str | None = None
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def included(self) -> bool:
        """Whether the block is only pymdownx.snippets lines (`--8<-- "path"`)."""
        lines = [line for line in self.code.splitlines() if line.strip()]
        return bool(lines) and all(_SNIPPET_LINE.match(line) for line in lines)


def documentation_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown file of the documentation, in a stable order."""
    found: list[Path] = []
    for name in DOCUMENTS:
        path = root / name
        found += sorted(path.rglob("*.md")) if path.is_dir() else [path]
    return found


def blocks(root: Path = ROOT) -> list[Block]:
    """Every fenced block of the documentation."""
    return [block for path in documentation_files(root) for block in blocks_of(path, root)]


def blocks_of(path: Path, root: Path = ROOT) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    relative = path.relative_to(root).as_posix()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        code = "\n".join(_dedent(line, indent) for line in lines[index + 1 : end]) + "\n"
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        yield Block(
            path=relative,
            line=index + 1,
            language=opening["language"].lower(),
            code=code,
            example=marker["value"] if marker and marker["kind"] == "example" else None,
            not_run=marker["value"] if marker and marker["kind"] == "not-run" else None,
        )
        index = end + 1


def unmarked(found: list[Block]) -> list[Block]:
    """The blocks that break the rule above: a shell, Python or JavaScript block without a
    marker (or a `not-run` without its reason), or a TypeScript block that is not an include."""
    wrong = []
    for block in found:
        marked = bool(block.example or block.not_run)
        if (block.language in MARKED_LANGUAGES and not marked) or (
            block.language in INCLUDED_LANGUAGES and not block.included
        ):
            wrong.append(block)
    return wrong


def _dedent(line: str, indent: int) -> str:
    taken = len(line) - len(line.lstrip(" \t"))
    return line[min(indent, taken) :]
