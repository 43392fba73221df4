"""The watched run's report: one console line per checkpoint and an HTML summary refreshed after every link.

The summary (``<run_dir>/live/index.html``, with ``live/status.json`` beside it for programs) lists every link's
quality (explained variance, L0, dead share, CE loss recovered: App. C.1's metrics on held-out tokens), the drift so far
(:mod:`saetrack.live.readings`) and the phase estimate so far, with a plot of the median decoder cosine to the latest
link (Fig. 6a read live). It is written atomically, so a browser reloading it never sees half a file.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from saetrack import store
from saetrack.stages.chain.continuity import restart_note

__all__ = ["LIVE_DIR", "checkpoint_line", "write_report"]

#: The report's folder in the run directory.
LIVE_DIR = "live"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def checkpoint_line(link: dict[str, Any], readings: dict[str, Any], seconds: float) -> str:
    """The console line of one new link: step, quality, drift from the previous link and the phases so far."""
    metrics = link["metrics"]
    phases = readings["phases"]
    phase = (
        f"phases so far: emergent from step {phases['emergent_step']}, convergent from step {phases['convergent_step']}"
        if phases
        else "phases: not enough links yet"
    )
    return (
        f"[watch] step {link['step']} (link {link['position'] + 1}): explained variance "
        f"{metrics['explained_variance']:.3f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_fraction']:.1%}, "
        f"CE recovered {metrics['ce_recovered']:.3f}, median cosine to previous link "
        f"{_fmt(readings['median_cosine_to_previous'], '.3f')}{restart_note(link)}; {phase}; {seconds:.1f} s"
    )


def _plot(path: Path, readings: dict[str, Any], restarts: list[int]) -> None:
    """The median cosine to the latest link against the checkpoint index, with the phases so far and a red band
    between each restarted link and the one before (the curve's step there is the break, not drift)."""
    steps = readings["steps"]
    values = [float("nan") if v is None else v for v in readings["median_cosine_to_latest"]]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    ax.plot(range(len(steps)), values, marker="o", color="#1f77b4")
    phases = readings["phases"]
    if phases:
        for key, colour in (("emergent_step", "#ff7f0e"), ("convergent_step", "#2ca02c")):
            ax.axvline(steps.index(phases[key]), color=colour, ls="--", lw=1, label=key.replace("_step", " phase"))
    for n, step in enumerate(s for s in restarts if s in steps[1:]):
        index = steps.index(step)
        ax.axvspan(index - 1, index, color="#d62728", alpha=0.15, label="chain restarted (a break, not drift)" if n == 0
                   else None)  # fmt: skip
    if phases or restarts:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=60, fontsize=7)
    ax.set_xlabel("checkpoint (training step)")
    ax.set_ylabel("median decoder cosine\nto the latest link")
    ax.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _continuity(link: dict[str, Any]) -> str:
    """The continuity rules' readings of a link (:mod:`saetrack.stages.chain.continuity`): the previous link's
    explained variance here, the L0 it reached when continued against the previous link's, and whether the chain
    restarted here; ``-`` when neither rule is on."""
    parts = []
    if link.get("carried_explained_variance") is not None:
        parts.append(f"carried EV {link['carried_explained_variance']:.3f}")
    if link.get("continued_l0") is not None:
        parts.append(f"continued L0 {link['continued_l0']:.1f} vs {link['previous_l0']:.1f}")
    if link.get("restarted"):
        parts.append("restart")
    return ", ".join(parts) or "-"


def _rows(links: list[dict[str, Any]], readings: dict[str, Any], costs: dict[int, dict[str, Any]]) -> str:
    rows = []
    for link, cosine in zip(links, readings["median_cosine_to_latest"], strict=True):
        m, seconds = link["metrics"], costs.get(link["step"], {}).get("seconds")
        cells = (link["step"], f"{m['explained_variance']:.3f}", f"{m['l0']:.1f}", f"{m['dead_fraction']:.1%}",
                 f"{m['ce_recovered']:.3f}", _continuity(link), _fmt(cosine, ".3f"), f"{link['l1_coefficient']:.4g}",
                 _fmt(seconds, ".1f"))  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def _peak(costs: dict[int, dict[str, Any]]) -> str:
    """The watcher's peak memory so far, from the latest link's cost record."""
    if not costs:
        return ""
    latest = costs[max(costs)]
    device = latest.get("peak_device_bytes")
    gpu = f", GPU {device / 2**30:.2f} GiB" if device is not None else ""
    return f"Watcher's peak memory so far: host {latest['peak_host_bytes'] / 2**30:.2f} GiB{gpu}."


def _explorer_link(run_dir: Path) -> str:
    """A link to the run's explorer when one has been built (``saetrack watch --explorer-every``)."""
    page = run_dir / "explorer" / "index.html"
    if not page.is_file():
        return ""
    built = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(page.stat().st_mtime))
    return f'<p><a href="../explorer/index.html">The explorer</a> of the chain so far (built {built}).</p>'


def write_report(run_dir: Path, source: str, links: list[dict[str, Any]], readings: dict[str, Any],
                 pending: dict[int, str], costs: dict[int, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Write ``run_dir/live/index.html``, its plot and ``status.json`` for the chain so far, with each link's cost
    (:mod:`saetrack.live.costs`) when given; return the HTML path."""
    costs = costs or {}
    folder = Path(run_dir) / LIVE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _plot(folder / "drift.png", readings, [link["step"] for link in links if link.get("restarted")])
    status = {"source": source, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "links": links,
              "readings": readings, "pending": {str(k): v for k, v in sorted(pending.items())},
              "costs": {str(k): v for k, v in sorted(costs.items())}}  # fmt: skip
    store.write_json(folder / "status.json", status)
    phases = readings["phases"]
    phase = (f"emergent from step {phases['emergent_step']}, convergent from step {phases['convergent_step']}"
             if phases else html.escape(readings["phase_note"] or "not enough links yet"))  # fmt: skip
    waiting = "".join(f"<li>step {k}: {html.escape(v)}</li>" for k, v in sorted(pending.items())) or "<li>none</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>SAE-Track live: {html.escape(source)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>SAE-Track, live</h1>
<p>Following <code>{html.escape(source)}</code>; updated {status["updated"]} (this page reloads every 30 s).
{len(links)} links; {readings["alive_at_latest"]} features alive at the latest link.</p>
<p>Phases so far (median decoder cosine to the latest link, against the checkpoint index): {phase}.
These readings change as later checkpoints arrive; notebook 04 gives the final ones.</p>
<img src="drift.png" alt="median decoder cosine of each link's features to the latest link">
<table><tr><th>step</th><th>explained variance</th><th>L0</th><th>dead</th><th>CE recovered</th>
<th>chain continuity</th><th>median cosine to latest</th><th>SAELens L1 coefficient</th>
<th>seconds</th></tr>
{_rows(links, readings, costs)}
</table>
<p>{_peak(costs)}</p>
{_explorer_link(Path(run_dir))}
<h2>Checkpoints seen but not ready</h2><ul>{waiting}</ul>
</body></html>
"""
    path = folder / "index.html"
    with store.atomic_path(path) as tmp:
        Path(tmp).write_text(page)
    return path
