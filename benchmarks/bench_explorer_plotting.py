"""Benchmark: which plotting library draws the explorer's feature page fastest and lightest, from file://.

The feature page of the explorer has five small charts, drawn here with the same synthetic data (seeded) by each
library:

a. decoder cosine to the final link and to the previous link over 28 checkpoints (2 lines), a shaded horizontal
   band (the noise floor) and 3 shaded vertical phase spans;
b. activation frequency (log y) and max activation over the checkpoints (2 lines, 2 y axes);
c. the progress measure and its baseline term (2 lines);
d. a crosscoder decoder-norm curve over 10 snapshots;
e. a histogram of 1,000 values in 20 bins (binned in Python, as the explorer's build would, and drawn as bars).

Variants: Plotly.js full bundle (``plotly.min.js`` bundled in the ``plotly`` pip package, a dependency of
sae-lens), Plotly.js basic bundle (npm ``plotly.js-basic-dist-min``: scatter, bar, pie), Vega-Lite through
vega-embed (npm ``vega`` + ``vega-lite`` + ``vega-embed``), and an empty page with only the data as the baseline.
Each page is opened ``--runs`` times (default 15) in a fresh browser context of one headless Chromium, the variants
alternating (the order rotates every round). Printed per variant: the script bytes it loads, the median time from
navigation start until the library scripts have run, and until all charts are drawn (every library's render
promise resolved, then one animation frame), with the quartiles, and the JS heap in use after a forced garbage
collection (Chrome's ``Performance.getMetrics``); then the same page is reloaded in its context and the time to
charts drawn again is printed too (a second visit: V8 may reuse compiled code).

The npm files are looked up by file name anywhere under ``--cache`` (default ``$SAETRACK_EXPLORER_LIBS`` or
``~/.cache/saetrack/explorer-libs``), or given one by one (``--plotly-basic``, ``--vega``, ...). To fill the
cache (npm registry only; the benchmark itself never touches the network)::

    mkdir -p ~/.cache/saetrack/explorer-libs && cd ~/.cache/saetrack/explorer-libs
    for p in plotly.js-basic-dist-min@4.1.1 vega@6.4.0 vega-lite@6.5.0 vega-embed@7.3.0; do npm pack "$p"; done
    for f in *.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done

A variant whose files are missing is left out, with a note. Run::

    python benchmarks/bench_explorer_plotting.py                 # about 2 minutes on 2 CPU cores
    python benchmarks/bench_explorer_plotting.py --runs 5 --cache /tmp/explorer-libs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
NPM_FILES = {
    "plotly_basic": "plotly-basic.min.js",
    "vega": "vega.min.js",
    "vega_lite": "vega-lite.min.js",
    "vega_embed": "vega-embed.min.js",
}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{name}</title>
<style>.chart {{ width: 460px; height: 220px; display: inline-block; }}</style></head>
<body>
<div class="chart" id="a"></div><div class="chart" id="b"></div><div class="chart" id="c"></div>
<div class="chart" id="d"></div><div class="chart" id="e"></div>
{scripts}
<script>window.__libsMs = performance.now();</script>
<script>const DATA = {data};</script>
<script>
function finish() {{
  requestAnimationFrame(() => {{ window.__drawnMs = performance.now(); window.__done = true; }});
}}
{draw}
</script>
</body></html>
"""

PLOTLY_DRAW = """
const D = DATA, L = {margin: {l: 45, r: 45, t: 10, b: 30}, showlegend: false};
const cfg = {staticPlot: false, displayModeBar: false};
const band = {type: "rect", xref: "paper", yref: "y", x0: 0, x1: 1, y0: D.floor[0], y1: D.floor[1],
              fillcolor: "grey", opacity: 0.25, line: {width: 0}, layer: "below"};
const spans = D.phases.map((p, i) => ({type: "rect", xref: "x", yref: "paper", x0: p[0], x1: p[1], y0: 0, y1: 1,
              fillcolor: ["#fdd", "#dfd", "#ddf"][i], opacity: 0.5, line: {width: 0}, layer: "below"}));
const line = (x, y, extra) => Object.assign({x: x, y: y, type: "scatter", mode: "lines"}, extra || {});
Promise.all([
  Plotly.newPlot("a", [line(D.step, D.cos_final), line(D.step, D.cos_prev)],
    Object.assign({shapes: [band, ...spans], xaxis: {type: "log"}}, L), cfg),
  Plotly.newPlot("b", [line(D.step, D.freq), line(D.step, D.max_act, {yaxis: "y2"})],
    Object.assign({xaxis: {type: "log"}, yaxis: {type: "log"}, yaxis2: {overlaying: "y", side: "right"}}, L), cfg),
  Plotly.newPlot("c", [line(D.step, D.progress), line(D.step, D.baseline, {line: {dash: "dot"}})],
    Object.assign({xaxis: {type: "log"}}, L), cfg),
  Plotly.newPlot("d", [line(D.snap, D.norm, {mode: "lines+markers"})], L, cfg),
  Plotly.newPlot("e", [{type: "bar", x: D.hist_mid, y: D.hist_count, width: D.hist_width}],
    Object.assign({bargap: 0}, L), cfg),
]).then(finish, (e) => { console.error(String(e)); window.__failed = true; });
"""

VEGA_DRAW = """
const D = DATA, W = 400, H = 170, opt = {actions: false, renderer: "__RENDERER__"};
const rows = (keys) => D.step.map((s, i) => Object.fromEntries([["step", s], ...keys.map((k) => [k, D[k][i]])]));
const x = {field: "step", type: "quantitative", scale: {type: "log"}};
const lines = (keys) => ({data: {values: rows(keys)}, transform: [{fold: keys, as: ["series", "value"]}],
  mark: "line", encoding: {x: x, y: {field: "value", type: "quantitative"}, color: {field: "series", legend: null}}});
const a = {width: W, height: H, layer: [
  {data: {values: [{lo: D.floor[0], hi: D.floor[1]}]}, mark: {type: "rect", opacity: 0.25, color: "grey"},
   encoding: {y: {field: "lo", type: "quantitative"}, y2: {field: "hi"}}},
  {data: {values: D.phases.map((p, i) => ({x0: p[0], x1: p[1], phase: String(i)}))},
   mark: {type: "rect", opacity: 0.3}, encoding: {x: {field: "x0", type: "quantitative", scale: {type: "log"}},
   x2: {field: "x1"}, color: {field: "phase", legend: null}}},
  lines(["cos_final", "cos_prev"])]};
const b = {width: W, height: H, data: {values: rows(["freq", "max_act"])}, layer: [
  {mark: "line", encoding: {x: x, y: {field: "freq", type: "quantitative", scale: {type: "log"}}}},
  {mark: {type: "line", color: "orange"}, encoding: {x: x, y: {field: "max_act", type: "quantitative"}}}],
  resolve: {scale: {y: "independent"}}};
const c = Object.assign({width: W, height: H}, lines(["progress", "baseline"]));
const d = {width: W, height: H, data: {values: D.snap.map((s, i) => ({snap: s, norm: D.norm[i]}))},
  mark: {type: "line", point: true}, encoding: {x: {field: "snap", type: "quantitative"},
  y: {field: "norm", type: "quantitative"}}};
const e = {width: W, height: H, data: {values: D.hist_count.map((n, i) => ({lo: D.hist_edges[i],
  hi: D.hist_edges[i + 1], n: n}))}, mark: "bar", encoding: {x: {field: "lo", type: "quantitative",
  bin: {binned: true}}, x2: {field: "hi"}, y: {field: "n", type: "quantitative"}}};
Promise.all([["a", a], ["b", b], ["c", c], ["d", d], ["e", e]].map(([id, spec]) => vegaEmbed("#" + id, spec, opt)))
  .then(finish, (err) => { console.error(String(err)); window.__failed = true; });
"""


def synthetic_data(seed: int = 0) -> dict[str, list[float]]:
    """The five charts' data: 28 log-spaced checkpoints, 10 crosscoder snapshots, 1,000 values binned in 20."""
    rng = np.random.default_rng(seed)
    step = np.unique(np.geomspace(1, 143_000, 28).astype(int)).astype(float)
    t = np.linspace(0, 1, step.size)
    cos_final = np.clip(1 - np.exp(-5 * t) + rng.normal(0, 0.02, t.size), 0, 1)
    cos_prev = np.clip(0.6 + 0.4 * t + rng.normal(0, 0.03, t.size), 0, 1)
    freq = 10 ** (-4 + 2.5 * t + rng.normal(0, 0.1, t.size))
    values = rng.gamma(2.0, 1.5, 1000)
    count, edges = np.histogram(values, bins=20)
    phases = [[step[0], step[6]], [step[6], step[15]], [step[15], step[-1]]]
    out: dict[str, Any] = {
        "step": step,
        "cos_final": cos_final,
        "cos_prev": cos_prev,
        "freq": freq,
        "max_act": 5 * t + rng.normal(0, 0.2, t.size) + 1,
        "progress": np.cumsum(np.abs(rng.normal(0, 1, t.size))),
        "baseline": np.linspace(0, 12, t.size),
        "snap": np.arange(10, dtype=float),
        "norm": 1 - np.exp(-np.arange(10) / 3) + rng.normal(0, 0.02, 10),
        "hist_edges": edges,
        "hist_mid": (edges[:-1] + edges[1:]) / 2,
        "hist_width": np.diff(edges),
        "hist_count": count,
        "floor": [0.05, 0.12],
        "phases": phases,
    }
    return {k: np.round(np.asarray(v, dtype=float), 6).tolist() for k, v in out.items()}


def find_libraries(args: argparse.Namespace) -> dict[str, Path | None]:
    """Each library file's path: the one given on the command line, else the first match under the cache folder
    (the full Plotly bundle: the ``plotly`` pip package's ``package_data/plotly.min.js``)."""
    found: dict[str, Path | None] = {}
    cache = Path(args.cache).expanduser()
    for key, name in NPM_FILES.items():
        given = getattr(args, key)
        matches = sorted(cache.rglob(name)) if cache.is_dir() else []
        found[key] = Path(given) if given else (matches[0] if matches else None)
    plotly_full = args.plotly
    if plotly_full is None:
        try:
            import plotly

            plotly_full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        except ImportError:
            plotly_full = None
    found["plotly"] = Path(plotly_full) if plotly_full else None
    return {k: (v if v is not None and v.is_file() else None) for k, v in found.items()}


def write_pages(out: Path, libs: dict[str, Path | None], renderer: str) -> dict[str, tuple[Path, list[Path]]]:
    """One HTML page per variant whose files exist, the library files copied beside it; variant -> (page,
    library files)."""
    variants = {
        "empty (data only)": ([], "finish();"),
        "plotly full (pip)": (["plotly"], PLOTLY_DRAW),
        "plotly basic (npm)": (["plotly_basic"], PLOTLY_DRAW),
        "vega-lite+embed (npm)": (["vega", "vega_lite", "vega_embed"], VEGA_DRAW.replace("__RENDERER__", renderer)),
    }
    data = json.dumps(synthetic_data())
    pages: dict[str, tuple[Path, list[Path]]] = {}
    for index, (name, (keys, draw)) in enumerate(variants.items()):
        missing = [NPM_FILES.get(k, k) for k in keys if libs[k] is None]
        if missing:
            print(f"note: {name} left out, not found: {', '.join(missing)} (see --help)", file=sys.stderr)
            continue
        folder = out / f"v{index}"
        folder.mkdir(parents=True, exist_ok=True)
        files = [Path(shutil.copy(libs[k], folder / f"{k}.js")) for k in keys]  # type: ignore[arg-type]
        scripts = "\n".join(f'<script src="{f.name}"></script>' for f in files)
        page = folder / "index.html"
        page.write_text(PAGE.format(name=name, scripts=scripts, data=data, draw=draw), encoding="utf-8")
        pages[name] = (page, files)
    return pages


def open_once(browser: Any, page_path: Path) -> dict[str, float]:
    """Open one page in a fresh context, wait for the charts, reload it once, and return the timings (ms), the JS
    heap in use after a garbage collection (MB) and the number of chart elements; raises on a logged error."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.resolve().as_uri())
    page.wait_for_function("window.__done === true || window.__failed === true", timeout=60_000)
    libs_ms, drawn_ms = page.evaluate("[window.__libsMs, window.__drawnMs]")
    marks = page.evaluate("document.querySelectorAll('.chart svg, .chart canvas').length")
    page.reload()  # the same page again in the same context: what a second visit costs
    page.wait_for_function("window.__done === true || window.__failed === true", timeout=60_000)
    again_ms = page.evaluate("window.__drawnMs")
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    context.close()
    if errors:
        raise RuntimeError(f"{page_path}: {errors}")
    return {
        "libs": libs_ms,
        "drawn": drawn_ms,
        "again": again_ms,
        "heap": metrics["JSHeapUsedSize"] / 1e6,
        "marks": marks,
    }


def trace_types(browser: Any, page_path: Path) -> list[str]:
    """The trace types a Plotly bundle registers (the basic bundle lacks ``histogram``)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(page_path.resolve().as_uri())
    page.wait_for_function("window.__done === true", timeout=60_000)
    types = page.evaluate("Object.keys(Plotly.PlotSchema.get().traces).sort()")
    context.close()
    return types


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = np.percentile(values, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def report(pages: dict[str, tuple[Path, list[Path]]], results: dict[str, list[dict[str, float]]]) -> None:
    """Print the side-by-side table: script bytes, median (quartiles) times, median heap, chart elements."""
    print(f"{'variant':24} {'script KB':>9} {'scripts run ms':>15} {'charts drawn ms (q1-q3)':>24} "
          f"{'reloaded ms':>11} {'JS heap MB':>10} {'elements':>8}")  # fmt: skip
    for name, runs in results.items():
        size = sum(f.stat().st_size for f in pages[name][1]) / 1e3
        libs = statistics.median(r["libs"] for r in runs)
        q1, med, q3 = _quartiles([r["drawn"] for r in runs])
        again = statistics.median(r["again"] for r in runs)
        heap = statistics.median(r["heap"] for r in runs)
        marks = int(statistics.median(r["marks"] for r in runs))
        drawn = f"{med:.0f} ({q1:.0f}-{q3:.0f})"
        print(f"{name:24} {size:9.0f} {libs:15.0f} {drawn:>24} {again:11.0f} {heap:10.1f} {marks:8d}")


def main() -> None:
    """Write the pages, open each ``--runs`` times alternating variants in one headless Chromium, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cache = os.environ.get("SAETRACK_EXPLORER_LIBS", "~/.cache/saetrack/explorer-libs")
    parser.add_argument("--cache", default=default_cache, help="folder searched for the npm files by name")
    parser.add_argument("--plotly", help="plotly.min.js (default: the plotly pip package's bundled file)")
    for key, name in NPM_FILES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, help=f"path of {name}")
    parser.add_argument("--runs", type=int, default=15, help="opens per variant (default 15)")
    parser.add_argument("--renderer", default="canvas", choices=["canvas", "svg"], help="Vega's renderer")
    parser.add_argument("--chromium", default=os.environ.get("SAETRACK_CHROMIUM") or shutil.which("chromium"))
    parser.add_argument("--out", help="folder for the pages (default: a temporary folder)")
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("no Chromium found: install Debian's chromium (apt-get install chromium) or set SAETRACK_CHROMIUM")
    from playwright.sync_api import sync_playwright

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="saetrack-bench-plotting-"))
    pages = write_pages(out, find_libraries(args), args.renderer)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in pages}
    names = list(pages)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        print(f"Chromium {browser.version}, {args.runs} opens per variant, alternating; pages in {out}")
        for name in names:  # one warm-up open each, not counted (first use of the disk cache, fonts)
            open_once(browser, pages[name][0])
        for i in range(args.runs):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                results[name].append(open_once(browser, pages[name][0]))
        for name in names:
            if name.startswith("plotly"):
                print(f"{name} trace types: {' '.join(trace_types(browser, pages[name][0]))}")
        browser.close()
    report(pages, results)


if __name__ == "__main__":
    main()
