"""mkdocs hooks (`hooks:` in mkdocs.yml): publish what the pages point at outside docs/.

The pages are written to read on GitHub as well as on the site (issue #18): they link to
repository files by their relative paths (`../deploy/prometheus/alerts.yml`) and include
ARCHITECTURE.md, bench/compare.md and the frontend's sources with pymdownx.snippets, so that
each stays single-sourced. On the site those targets lie outside `docs_dir`; these hooks make
them resolve there too, so that `mkdocs build --strict` still fails on a link to nothing:

- a repository file that a page links to (not a Markdown file: that would become a page) is
  published as it is under `repo/`, and the page's link rewritten to it;
- an image that an included Markdown file shows relative to itself (bench/compare.md's
  `compare.png`) is published beside the page that includes it;
- `openapi.json` is the app's OpenAPI document, generated at build time by `create_app` from
  the default settings (whatever the environment says) plus a `REDIS_URL`, so that the resume
  routes are in it: it cannot drift from the routes.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from service.app import create_app
from service.settings import Settings

PUBLISHED_UNDER = "repo"
OPENAPI_URI = "openapi.json"
# A Markdown link or image to a path that leaves docs/: `](../deploy/x.yml#anchor)`.
_PARENT_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")
# A snippet line, `--8<-- "bench/compare.md:3:"`, and its path without lines or a section.
_SNIPPET = re.compile(r'^\s*-+8<-+\s+"([^":]+)[^"]*"', re.MULTILINE)
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = _repository(config)
    for page in files.documentation_pages():
        markdown = page.content_string
        for _, target, uri in _repository_links(markdown, page.src_uri, config):
            _publish(files, config, uri, target)
        for included in _SNIPPET.findall(markdown):
            path = root / included
            if path.suffix != ".md" or not path.is_file():
                continue  # pymdownx.snippets (check_paths) reports a missing one
            for image in _IMAGE.findall(path.read_text(encoding="utf-8")):
                if "://" in image or image.startswith("/"):
                    continue
                uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.src_uri), image))
                _publish(files, config, uri, (path.parent / image).resolve())
    files.append(File.generated(config, OPENAPI_URI, content=_openapi_document()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    here = posixpath.dirname(page.file.src_uri) or "."
    for link, _, uri in _repository_links(markdown, page.file.src_uri, config):
        markdown = markdown.replace(f"]({link}", f"]({posixpath.relpath(uri, here)}")
    return markdown


def _repository_links(
    markdown: str, src_uri: str, config: MkDocsConfig
) -> Iterator[tuple[str, Path, str]]:
    """(link as written, the file it names, its URI on the site) for each link of a page to a
    repository file outside docs/ that is not Markdown. Other links are left to mkdocs, which
    reports those that lead nowhere."""
    root, docs = _repository(config), Path(config.docs_dir).resolve()
    for link, _ in _PARENT_LINK.findall(markdown):
        target = (docs / posixpath.dirname(src_uri) / link).resolve()
        if target.is_relative_to(docs) or not target.is_relative_to(root):
            continue
        if target.is_file() and target.suffix != ".md":
            yield link, target, f"{PUBLISHED_UNDER}/{target.relative_to(root).as_posix()}"


def _publish(files: Files, config: MkDocsConfig, uri: str, source: Path) -> None:
    if files.get_file_from_path(uri) is None:
        files.append(File.generated(config, uri, abs_src_path=str(source)))


def _repository(config: MkDocsConfig) -> Path:
    assert config.config_file_path, "mkdocs.yml is read from the repository's root"
    return Path(config.config_file_path).resolve().parent


class _DefaultSettings(Settings):
    """The settings with nothing read from the environment or `.env`: the document describes
    the service as shipped, not as the machine building the site is configured."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _openapi_document() -> str:
    # REDIS_URL adds the resume routes; building the app connects to nothing.
    app = create_app(_DefaultSettings(redis_url="redis://localhost:6379/0"))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
