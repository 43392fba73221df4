"""The documentation: the site builds with ``mkdocs build --strict`` (no broken link, page or reference), it carries
an API reference page for every module, and the README stays short enough to read in a few minutes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from saetrack import paths

ROOT = paths.REPO_ROOT
#: The README's length limit: a newcomer reads it in five minutes; the rest belongs in docs/.
README_MAX_WORDS = 2000


def test_the_site_builds_strictly_with_a_reference_page_per_module(tmp_path: Path) -> None:
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in (ROOT / "saetrack").rglob("*.py")}  # fmt: skip
    built = {p.parent.name for p in (site / "reference").glob("*/index.html")}
    assert built == modules
    drift = (site / "reference" / "saetrack.analysis.drift" / "index.html").read_text()
    assert "cosine_to_final" in drift and ":func:" not in drift  # rendered from the docstrings, roles as code
    for page in ("results", "paper-to-code", "method", "api", "overview"):
        assert (site / page / "index.html").exists(), page
    assert (site / "figures" / "nano" / "fig05_progress_measure.png").exists()


def test_the_readme_reads_in_five_minutes_and_names_no_issue() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split()) < README_MAX_WORDS  # counted as `wc -w` counts, code and tables included
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        assert not re.search(r"\bissues? #?\d+", text, flags=re.I), f"{page.name} names an issue number"
        assert not re.search(r"/(?:tmp|work|root|home)/\w", text), f"{page.name} shows a machine path"
