"""The examples of docs/api.md run, with doctest, on a fresh smoke run; so does the README's API snippet."""

from __future__ import annotations

import contextlib
import doctest
import io
import re
from pathlib import Path

import pytest

from saetrack import paths

pytestmark = pytest.mark.slow

PAGE = paths.REPO_ROOT / "docs" / "api.md"
FENCE = re.compile(r"^```pycon\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def pycon_only(text: str) -> str:
    """The page with everything outside its ```pycon blocks blanked, line for line (line numbers stay right, and the
    closing fence cannot be read as expected output)."""
    keep = [False] * text.count("\n")
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start(1))
        keep[first : first + block.group(1).count("\n")] = [True] * block.group(1).count("\n")
    lines = text.split("\n")
    return "\n".join(line if i < len(keep) and keep[i] else "" for i, line in enumerate(lines))


def test_pycon_only_keeps_the_blocks_in_place() -> None:
    page = "prose >>> not code\n```pycon\n>>> 1 + 1\n2\n```\nmore\n```python\n>>> 3\n```\n"
    assert pycon_only(page).split("\n") == ["", "", ">>> 1 + 1", "2", "", "", "", "", "", ""]


def test_the_page_has_examples() -> None:
    examples = doctest.DocTestParser().get_examples(pycon_only(PAGE.read_text()))
    assert len(examples) >= 15


def test_the_examples_of_the_page_pass(api_run_dir: Path) -> None:
    text = pycon_only(PAGE.read_text())
    test = doctest.DocTestParser().get_doctest(text, {"RUN_DIR": str(api_run_dir)}, PAGE.name, str(PAGE), 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    assert result.attempted == len(test.examples)
    assert result.failed == 0, "".join(report)


def test_the_readmes_api_snippet_runs(api_run_dir: Path) -> None:
    readme = (paths.REPO_ROOT / "README.md").read_text()
    section = readme.split("## The Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert '"runs/nano"' in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace('"runs/nano"', repr(str(api_run_dir))), "README.md", "exec"), {})
    assert "«" in printed.getvalue() and len(printed.getvalue().splitlines()) >= 4
