"""The configuration table of docs/configuration.md, generated from `service.settings.Settings`
(issue #18), so that the page cannot drift from what the service reads.

One row per field, in the class's order: the environment variable (the field's alias, else its
name, upper-cased, as pydantic-settings reads it), its default, the values it accepts (from the
type and the bounds), and its `Field(description=...)`. A field without a description is an
error: a new setting is documented where it is declared, and the table picks it up.

`python -m docsite.settings_table` (`make docs-config`) rewrites the table between the page's
two markers; `--check` changes nothing and exits 1 when the page is not what it would write.
tests/test_docs_configuration.py fails in both directions: a variable in the class but not on
the page, or on the page but not in the class.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START = "<!-- settings-table:start: generated from service/settings.py by `make docs-config` -->"
END = "<!-- settings-table:end -->"
HEADER = "| variable | default | accepts | meaning |\n| --- | --- | --- | --- |"
UNSET = "unset"


class UndocumentedSetting(Exception):
    """A settings field has no `description`, so its row would say nothing."""


def environment_name(name: str, field: FieldInfo) -> str:
    """The environment variable pydantic-settings reads for the field `name` (case-insensitive;
    written upper-case, as the docs and `.env.example` spell them)."""
    return (field.alias or name).upper()


def render_table(settings_class: type[BaseModel] = Settings) -> str:
    """The Markdown table: a header and one row per field of `settings_class`."""
    rows = [HEADER]
    for name, field in settings_class.model_fields.items():
        if not field.description:
            raise UndocumentedSetting(
                f"{settings_class.__name__}.{name} ({environment_name(name, field)}) has no "
                "description: give it Field(description=...), which docs/configuration.md shows"
            )
        cells = (
            f"`{environment_name(name, field)}`",
            _default(field),
            _accepts(field),
            " ".join(field.description.split()),
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def replace_table(page: str, table: str) -> str:
    """`page` with whatever stands between the markers replaced by `table`."""
    before, after = _split(page)
    return f"{before}{START}\n{table}\n{END}{after}"


def documented_variables(page: str) -> list[str]:
    """The variables the page's table lists (its first column), in order."""
    _, table, _ = _split(page, keep_table=True)
    return re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)


def _split(page: str, *, keep_table: bool = False) -> tuple[str, ...]:
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no table markers ({START} ... {END})")
    before, table, after = page[:start], page[start + len(START) : end], page[end + len(END) :]
    return (before, table, after) if keep_table else (before, after)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or value == "":
        return UNSET
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, int | float | str):
        return f"`{value}`"
    return f"`{json.dumps(value, default=str)}`"


def _accepts(field: FieldInfo) -> str:
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        choices = [f"`{choice}`" for choice in typing.get_args(annotation)]
        return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    kinds: dict[object, str] = {
        bool: "`true` or `false`",
        int: "integer",
        float: "number",
        str: "text",
        SecretStr: "secret text",
        Path: "a file's path",
    }
    # pydantic-settings reads anything else (lists, dicts, models) as JSON.
    return kinds.get(annotation, "JSON") + _bounds(field)


def _bounds(field: FieldInfo) -> str:
    """The field's constraints in words: `from 0 to 10`, `> 0`, `≥ 1`, `of 1 to 100 characters`"""
    rules: dict[str, object] = {}
    pattern = None
    for rule in field.metadata:
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if isinstance(value := getattr(rule, key, None), int | float):
                rules[key] = value
        pattern = getattr(rule, "pattern", None) or pattern
    words = []
    if "ge" in rules and "le" in rules:
        words.append(f"from {_number(rules['ge'])} to {_number(rules['le'])}")
    else:
        words += [f"> {_number(rules['gt'])}"] if "gt" in rules else []
        words += [f"≥ {_number(rules['ge'])}"] if "ge" in rules else []
        words += [f"≤ {_number(rules['le'])}"] if "le" in rules else []
    words += [f"< {_number(rules['lt'])}"] if "lt" in rules else []
    if "min_length" in rules and "max_length" in rules:
        words.append(f"of {rules['min_length']} to {rules['max_length']} characters")
    elif "min_length" in rules:
        words.append(f"of at least {rules['min_length']} characters")
    elif "max_length" in rules:
        words.append(f"of at most {rules['max_length']} characters")
    if pattern is not None:
        words.append(f"matching `{pattern}`")
    return (" " + ", ".join(words)) if words else ""


def _number(value: object) -> str:
    """As it is written in the environment: `5`, not `5.0`."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    arguments = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    generated = replace_table(page, render_table())
    if arguments.check:
        if generated != page:
            print(f"{PAGE} is not what `make docs-config` would write", file=sys.stderr)
            return 1
        return 0
    if generated != page:
        PAGE.write_text(generated, encoding="utf-8")
        print(f"{PAGE}: table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
