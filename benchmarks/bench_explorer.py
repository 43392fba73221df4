"""The explorer's size and how fast it opens, measured in headless Chromium from the file system (as a reader opens it).

    python benchmarks/bench_explorer.py                               # figures/nano/explorer, 9 rounds
    python benchmarks/bench_explorer.py PATH --rounds 15 --feature 12
    python benchmarks/bench_explorer.py --screenshots docs/img         # also the README's two screenshots

Each round opens, in a fresh browser context (nothing cached), (1) the index and (2) one feature page directly, then
(3) goes from the index (filtered to the feature) to the feature page by clicking its link (the page already loaded,
Plotly.js loading in the background), and (4) opens one checkpoint page; each time is from navigation start until
the explorer marks the view drawn (its data loaded, its table filled and every chart drawn: ``body[data-ready]``).
Prints the medians and quartiles, and the site's size by part. Needs playwright and a Chromium (Debian's
``chromium``; ``$SAETRACK_CHROMIUM`` to choose one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from saetrack.stages.explorer.site import site_bytes

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def _chromium() -> str:
    chosen = os.environ.get("SAETRACK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chosen:
        raise SystemExit("no Chromium found: apt-get install chromium, or set SAETRACK_CHROMIUM")
    return chosen


def _timed(page: Any, url: str, ready: str, click: str = "") -> float:
    """Seconds from starting to load ``url`` (or clicking ``click``) until ``body[data-ready]`` equals ``ready``."""
    start = time.perf_counter()
    if click:
        page.click(click)
    else:
        page.goto(url)
    page.wait_for_function("ready => document.body.dataset.ready === ready", arg=ready, timeout=60_000)
    return time.perf_counter() - start


def _summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{1000 * statistics.median(values):7.0f} ms (quartiles {1000 * q[0]:.0f}-{1000 * q[2]:.0f})"


def measure(site: Path, rounds: int, feature: int, screenshots: Path | None) -> None:
    """Open the explorer at ``site`` ``rounds`` times and print the times and sizes (module doc)."""
    from playwright.sync_api import sync_playwright

    index_url = (site / "index.html").resolve().as_uri()
    times: dict[str, list[float]] = {"index (cold)": [], "feature page (cold)": [], "index -> feature": [],
                                     "checkpoint page": []}  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=ARGS)
        for _ in range(rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            times["index (cold)"].append(_timed(page, index_url, ready=_index_ready(site)))
            _timed(page, f"{index_url}#/?q={feature}", "index:1")  # the feature's row shown (not timed)
            link = f'#index-table a.feature-link[href="#/feature/{feature}"]'
            times["index -> feature"].append(_timed(page, "", f"feature:{feature}", click=link))
            context.close()
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            times["feature page (cold)"].append(_timed(page, f"{index_url}#/feature/{feature}", f"feature:{feature}"))
            step = _last_step(site)
            times["checkpoint page"].append(_timed(page, f"{index_url}#/checkpoint/{step}", f"checkpoint:{step}"))
            context.close()
        if screenshots is not None:
            _screenshots(browser, index_url, feature, screenshots)
        browser.close()
    sizes = site_bytes(site)
    print(f"explorer at {site}: {sizes['total'] / 1e6:.1f} MB in {sizes['files']:,} files; opening the index loads "
          f"{sizes['index'] / 1e6:.2f} MB, the plotting library {sizes['vendor'] / 1e6:.2f} MB (with the first chart), "
          f"one feature page {sizes['features'] / max(1, _n_features(site)) / 1e3:.1f} kB on average")  # fmt: skip
    print(f"{rounds} rounds, headless Chromium, file://")
    for name, values in times.items():
        print(f"  {name:22s} {_summary(values)}")


def _index_ready(site: Path) -> str:
    return f"index:{_n_features(site)}"


def _n_features(site: Path) -> int:
    return sum(1 for _ in (site / "data" / "features").rglob("*.js"))


def _last_step(site: Path) -> int:
    return max(int(p.stem) for p in (site / "data" / "checkpoints").glob("*.js"))


def _screenshots(browser: Any, index_url: str, feature: int, folder: Path) -> None:
    """The README's screenshots: the index sorted by formation step, and one feature page (its charts and the top
    contexts of its first checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{index_url}#/?sort=formation_step")
    page.wait_for_function("() => (document.body.dataset.ready || '').startsWith('index:')")
    page.screenshot(path=str(folder / "explorer-index.png"))
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.goto(f"{index_url}#/feature/{feature}")
    page.wait_for_function("f => document.body.dataset.ready === f", arg=f"feature:{feature}")
    page.screenshot(path=str(folder / "explorer-feature.png"))
    context.close()
    print(f"screenshots: {folder / 'explorer-index.png'}, {folder / 'explorer-feature.png'}")


def main() -> None:
    """Parse the options and measure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", nargs="?", default=str(ROOT / "figures" / "nano" / "explorer"))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--feature", type=int, default=12, help="the feature page to open (default %(default)s)")
    parser.add_argument("--screenshots", default="", help="folder for the README's screenshots")
    args = parser.parse_args()
    site = Path(args.site)
    if not (site / "index.html").is_file():
        raise SystemExit(f"no explorer at {site}: build it with `saetrack run --only explorer`")
    measure(site, args.rounds, args.feature, Path(args.screenshots) if args.screenshots else None)


if __name__ == "__main__":
    main()
