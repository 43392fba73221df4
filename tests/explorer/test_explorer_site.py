"""The smoke run's explorer in a real headless Chromium, opened from the file system as a reader opens it.

The session's smoke pipeline (``tests/conftest.py``) publishes the explorer to ``figures/smoke/explorer/``; these
tests sort and filter its index, search the top contexts, open a feature and a checkpoint, and check that what the
page shows is what the run API says (the same contexts, one row per checkpoint, the drift plot drawn), with no error
in the browser's console and no request to the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from saetrack import paths
from saetrack.api import Run, open_run
from tests.explorer.browser import file_url

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_site(smoke_pipeline: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """The smoke run (opened with the run API) and its published explorer's ``index.html`` (under the session's
    ``figures/`` folder, where ``smoke_pipeline`` publishes)."""
    run_dir = smoke_pipeline[0]
    page = tmp_path_factory.getbasetemp() / "figures" / "smoke" / paths.EXPLORER_DIR / "index.html"
    assert page.is_file(), f"the smoke pipeline published no explorer at {page}"
    return open_run(run_dir), page


def _wait_ready(page: Any, ready: str, address: str = "") -> None:
    """Wait until the explorer has drawn the view ``ready`` (a prefix of ``body[data-ready]``) for an address holding
    ``address`` (``body[data-hash]``, set with it)."""
    page.wait_for_function(
        "([ready, address]) => (document.body.dataset.ready || '').startsWith(ready)"
        " && (document.body.dataset.hash || '').includes(address)",
        arg=[ready, address],
    )


def _open(page: Any, url: str, ready: str) -> None:
    """Go to ``url`` and wait until the explorer has drawn the view ``ready`` for it."""
    page.goto(url)
    _wait_ready(page, ready, url.partition("#")[2])


def _column(page: Any, key: str) -> list[str]:
    """The text of column ``key`` in the index's shown rows, top to bottom."""
    index = page.eval_on_selector("#index-table thead tr", "r => [...r.children].map(th => th.dataset.key)").index(key)
    return page.eval_on_selector_all("#index-table tbody tr", f"rows => rows.map(r => r.children[{index}].innerText)")


def _numbers(texts: list[str]) -> list[float | None]:
    return [None if t.strip() in ("–", "") else float(t) for t in texts]


def test_index_sorts_and_filters(browser_page: Any, smoke_site: tuple[Run, Path]) -> None:
    run, page_path = smoke_site
    page = browser_page
    _open(page, file_url(page_path), "index:")
    assert page.inner_text("#match-count") == f"{run.n_features} of {run.n_features} features"
    assert _numbers(_column(page, "feature")) == list(range(min(run.n_features, 100)))

    page.click('#index-table th[data-key="formation_step"]')
    _wait_ready(page, "index:", "dir=asc")
    ascending = _numbers(_column(page, "formation_step"))
    known = [v for v in ascending if v is not None]
    assert known == sorted(known) and ascending[: len(known)] == known  # never-formed ones last
    page.click('#index-table th[data-key="formation_step"]')
    _wait_ready(page, "index:", "dir=desc")
    descending = [v for v in _numbers(_column(page, "formation_step")) if v is not None]
    assert descending == sorted(descending, reverse=True)
    assert page.get_attribute('#index-table th[data-key="formation_step"]', "aria-sort") == "descending"

    patterns = run.formation().patterns
    chosen = str(patterns[0])
    page.select_option("#filter-pattern", chosen)
    _wait_ready(page, "index:", f"pattern={chosen}")
    assert set(_column(page, "pattern")) == {chosen}
    assert page.inner_text("#match-count").startswith(f"{int((patterns == chosen).sum())} of")


def test_index_searches_tokens_and_contexts(browser_page: Any, smoke_site: tuple[Run, Path]) -> None:
    run, page_path = smoke_site
    page = browser_page
    feature = int(run.live_features[0])
    context = run.feature(feature).top_contexts(run.steps[-1], k=1)[0].text
    word = max(re.findall(r"[A-Za-z]{3,}", context) or [context.strip()[:3]], key=len)
    _open(page, file_url(page_path) + f"#/?text={word}&q={feature}", "index:")
    assert _column(page, "feature") == [str(feature)]  # its contexts hold the word
    _open(page, file_url(page_path) + "#/?text=zqxjzqxj", "index:0")
    assert page.inner_text("#match-count").startswith("0 of")
    token = run.feature(feature).activation_stats(run.steps[-1]).dominant_text
    _open(page, file_url(page_path) + "#/", "index:")
    page.fill("#filter-text", token)
    page.press("#filter-text", "Enter")
    _wait_ready(page, "index:", "q=")
    shown = page.eval_on_selector_all("#index-table tbody tr", "rows => rows.length")
    visible = token.replace("\n", "⏎").replace("\t", "⇥").lower()
    pairs = zip(_column(page, "first_token"), _column(page, "final_token"), strict=True)
    assert shown > 0 and all(visible in (a + b).lower() for a, b in pairs)
    assert not page.saetrack_errors


def test_feature_page_shows_every_checkpoint(browser_page: Any, smoke_site: tuple[Run, Path]) -> None:
    run, page_path = smoke_site
    page = browser_page
    _open(page, file_url(page_path), "index:")
    feature = int(run.live_features[0])
    page.fill("#filter-text", str(feature))
    page.press("#filter-text", "Enter")
    _wait_ready(page, "index:", f"q={feature}")
    page.click(f'#index-table a.feature-link[href="#/feature/{feature}"]')
    _wait_ready(page, f"feature:{feature}", f"#/feature/{feature}")

    steps = page.eval_on_selector_all("#contexts tbody tr", "rows => rows.map(r => Number(r.dataset.step))")
    assert steps == list(run.steps)
    k = run.config.explorer.contexts_per_checkpoint
    for step in run.steps:
        shown = page.eval_on_selector_all(
            f'#contexts tr[data-step="{step}"] .ctx', "spans => spans.map(s => s.querySelector('.t.peak').innerText)"
        )
        expected = [c.text.split("«")[1].split("»")[0] for c in run.feature(feature).top_contexts(step, k=k)]
        visible = [e.replace("\n", "⏎").replace("\t", "⇥").strip() for e in expected]
        assert [s.strip() for s in shown] == visible, f"step {step}"
    # the drift plot is drawn: both curves (cosine to final and to the previous link) as SVG traces
    assert page.eval_on_selector_all("#chart-drift .scatterlayer .trace", "t => t.length") >= 2
    assert page.eval_on_selector_all("#chart-activation .scatterlayer .trace", "t => t.length") >= 2
    assert not page.saetrack_errors


def test_checkpoint_page_and_links(browser_page: Any, smoke_site: tuple[Run, Path]) -> None:
    run, page_path = smoke_site
    page = browser_page
    step = run.steps[len(run.steps) // 2]
    _open(page, file_url(page_path) + f"#/checkpoint/{step}", f"checkpoint:{step}")
    assert page.eval_on_selector_all("#chart-hist-final .barlayer .point", "p => p.length") > 0
    assert "explained_variance" in page.inner_text("#link-metrics")
    formed = page.eval_on_selector_all("#formed a.feature-link", "a => a.map(x => x.getAttribute('href'))")
    drift = run.drift()
    expected = sorted(
        int(f) for f, t in zip(drift.live_features, drift.formation_time, strict=True) if t == run.position(step)
    )
    assert formed == [f"#/feature/{f}" for f in expected]
    _open(page, file_url(page_path) + "#/feature/999999", "error")
    assert "out of range" in page.inner_text("#view")
    assert not page.saetrack_errors
