"""MkDocs hook: the repository's README and committed figures join the site, and the API reference is generated.

The pages of ``docs/`` link the README as ``../README.md`` and the figures as ``../figures/...`` (right when read on a
code host); in the site those files are added as ``overview.md`` and ``figures/...`` and the links rewritten to them.
One reference page per package module (``reference/<module>.md``, a ``::: saetrack.x`` block rendered by
mkdocstrings from the docstrings) is generated, with an index.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "saetrack"
#: Committed figure files the site carries (PDFs are not committed).
FIGURE_SUFFIXES = {".png", ".html", ".json", ".md"}


def _modules() -> list[str]:
    """Every module of the package, dotted, in file order (a package's ``__init__`` as the package)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README (as ``overview.md``), the committed figures and the generated reference pages."""
    files.append(File.generated(config, "overview.md", abs_src_path=str(ROOT / "README.md")))
    for path in sorted((ROOT / "figures").rglob("*")):
        explorer = "explorer" in path.relative_to(ROOT).parts  # the explorer's site travels whole (scripts, styles)
        if path.is_file() and (path.suffix in FIGURE_SUFFIXES or explorer):
            uri = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    modules = _modules()
    index = ["# API reference", "", "Generated from the docstrings, one page per module of the package.", ""]
    for name in modules:
        files.append(File.generated(config, f"reference/{name}.md", content=f"# `{name}`\n\n::: {name}\n"))
        index.append(f"- [`{name}`]({name}.md)")
    files.append(File.generated(config, "reference/index.md", content="\n".join(index) + "\n"))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point the links that leave ``docs/`` at the copies in the site."""
    depth = page.file.src_uri.count("/")
    up = "../" * depth
    if page.file.src_uri == "overview.md":  # the README links docs pages as docs/x.md and figures as figures/...
        return re.sub(r"\]\(docs/", "](", markdown)
    if page.file.src_uri.startswith("figures/"):  # a figure folder's page links docs pages as ../docs/x.md
        return markdown.replace("](../docs/", f"]({up}")
    if page.file.src_uri.startswith("reference/"):
        return markdown
    markdown = markdown.replace("](../README.md)", f"]({up}overview.md)")
    return markdown.replace("](../figures/", f"]({up}figures/")
