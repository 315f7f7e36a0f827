"""docs/configuration.md against the settings class (issue #18): the page's table is generated
from `Settings` (`make docs-config`, `docsite.settings_table`), and these tests fail while the
two disagree: a variable the service reads that the page does not list, one the page lists that
the service does not read, or a row whose default, accepted values or description changed in
the class since the table was written."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from docsite.settings_table import (
    END,
    PAGE,
    START,
    UndocumentedSetting,
    documented_variables,
    environment_name,
    render_table,
    replace_table,
)
from service.settings import Settings


def test_every_variable_the_service_reads_is_on_the_page_and_no_other() -> None:
    read = [environment_name(name, field) for name, field in Settings.model_fields.items()]
    listed = documented_variables(PAGE.read_text(encoding="utf-8"))
    missing, unknown = set(read) - set(listed), set(listed) - set(read)
    assert not missing, (
        f"in Settings but not on {PAGE.name}: {sorted(missing)}; run make docs-config"
    )
    assert not unknown, (
        f"on {PAGE.name} but not in Settings: {sorted(unknown)}; run make docs-config"
    )
    assert listed == read, "the page's rows are not in the class's order; run make docs-config"


def test_the_table_is_the_one_generated_from_the_class() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert replace_table(page, render_table()) == page, (
        f"{PAGE.name}'s table differs from service/settings.py's fields: run make docs-config"
    )


class _Example(BaseModel):
    plain: int = Field(default=3, ge=1, le=9, description="A bounded number.")
    named: str | None = Field(default=None, alias="OTHER_NAME", description="Read as OTHER_NAME.")


def test_a_new_field_gets_its_row_from_its_declaration() -> None:
    table = render_table(_Example)
    assert "| `PLAIN` | `3` | integer from 1 to 9 | A bounded number. |" in table
    assert "| `OTHER_NAME` | unset | text | Read as OTHER_NAME. |" in table
    page = replace_table(f"# A page\n{START}\n{END}\nMore text.\n", table)
    assert documented_variables(page) == ["PLAIN", "OTHER_NAME"]
    assert page.endswith(f"{END}\nMore text.\n")


def test_a_field_without_a_description_is_refused() -> None:
    class Undocumented(BaseModel):
        upstreams: list[str] = Field(default_factory=list)

    with pytest.raises(UndocumentedSetting, match="UPSTREAMS"):
        render_table(Undocumented)
