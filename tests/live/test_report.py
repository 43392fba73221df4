"""The watched run's console line and HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from saetrack.live.report import LIVE_DIR, checkpoint_line, write_report


def _link(step: int, position: int) -> dict:
    metrics = {"explained_variance": 0.91234, "l0": 31.96, "dead_fraction": 0.0125, "ce_recovered": 0.8765}
    return {"step": step, "position": position, "metrics": metrics, "l1_coefficient": 0.0123}


def _readings(phases: dict | None) -> dict:
    return {"steps": [0, 10, 20], "alive_at_latest": 250, "median_cosine_to_latest": [0.2, None, 1.0],
            "median_cosine_to_previous": 0.875, "phases": phases, "phase_note": "too few links"}  # fmt: skip


def test_checkpoint_line_says_quality_drift_and_phases() -> None:
    line = checkpoint_line(_link(20, 2), _readings({"emergent_step": 10, "convergent_step": 20}), 12.34)
    assert line.startswith("[watch] step 20 (link 3): explained variance 0.912, L0 32.0, dead 1.2%")
    assert "median cosine to previous link 0.875" in line
    assert "emergent from step 10, convergent from step 20" in line and line.endswith("12.3 s")
    assert "not enough links yet" in checkpoint_line(_link(0, 0), _readings(None), 1.0)


def test_write_report_writes_page_plot_and_status(tmp_path: Path) -> None:
    links = [_link(0, 0), _link(10, 1), _link(20, 2)]
    page = write_report(tmp_path, "/runs/x", links, _readings(None), {30: "being written"})
    text = page.read_text()
    assert page == tmp_path / LIVE_DIR / "index.html"
    assert "too few links" in text and "step 30: being written" in text and "<td>20</td>" in text
    assert (tmp_path / LIVE_DIR / "drift.png").read_bytes()[:4] == b"\x89PNG"
    status = json.loads((tmp_path / LIVE_DIR / "status.json").read_text())
    assert [link["step"] for link in status["links"]] == [0, 10, 20] and status["pending"] == {"30": "being written"}


def test_the_report_shows_each_links_seconds_and_the_watchers_peak_memory(tmp_path: Path) -> None:
    links = [_link(0, 0), _link(10, 1), _link(20, 2)]
    costs = {0: {"seconds": 61.25, "peak_host_bytes": 2**30, "peak_device_bytes": None},
             20: {"seconds": 4.5, "peak_host_bytes": 3 * 2**29, "peak_device_bytes": 2**31}}  # fmt: skip
    text = write_report(tmp_path, "/runs/x", links, _readings(None), {}, costs).read_text()
    assert "<td>61.2</td>" in text and "<td>4.5</td>" in text and "<td>-</td>" in text  # step 10 has no record
    assert "peak memory so far: host 1.50 GiB, GPU 2.00 GiB" in text  # the latest link's running maximum
    status = json.loads((tmp_path / LIVE_DIR / "status.json").read_text())
    assert status["costs"]["20"]["seconds"] == 4.5 and set(status["costs"]) == {"0", "20"}
    assert "peak memory" not in write_report(tmp_path, "/runs/x", links, _readings(None), {}).read_text()


def test_the_summary_links_to_the_explorer_once_one_is_built(tmp_path: Path) -> None:
    links = [_link(0, 0), _link(10, 1), _link(20, 2)]
    assert "explorer" not in write_report(tmp_path, "/runs/x", links, _readings(None), {}).read_text()
    (tmp_path / "explorer").mkdir()
    (tmp_path / "explorer" / "index.html").write_text("<html></html>")
    text = write_report(tmp_path, "/runs/x", links, _readings(None), {}).read_text()
    assert '<a href="../explorer/index.html">The explorer</a> of the chain so far (built ' in text


def test_a_restart_is_said_in_the_line_and_marked_in_the_table(tmp_path: Path) -> None:
    restarted = {**_link(10, 1), "restarted": True, "carried_explained_variance": -0.3125}
    line = checkpoint_line(restarted, _readings(None), 2.0)
    assert "chain restarted here: the previous link explains -0.312 of this checkpoint's variance" in line
    assert "restarted" not in checkpoint_line({**_link(10, 1), "restarted": False,
                                               "carried_explained_variance": 0.5}, _readings(None), 2.0)  # fmt: skip
    links = [_link(0, 0), restarted, {**_link(20, 2), "restarted": False, "carried_explained_variance": 0.75}]
    text = write_report(tmp_path, "/runs/x", links, _readings(None), {}).read_text()
    assert "<td>carried EV -0.312, restart</td>" in text and "<td>carried EV 0.750</td>" in text
    assert "<td>-</td><td>" in text  # the first link: no reading


def test_a_restart_by_the_outcome_rule_names_both_l0s(tmp_path: Path) -> None:
    by_l0 = {**_link(10, 1), "restarted": True, "restart_cause": "l0", "carried_explained_variance": None,
             "previous_l0": 32.7, "continued_l0": 128.04}  # fmt: skip
    line = checkpoint_line(by_l0, _readings(None), 2.0)
    assert "continued from the previous link it reached L0 128.0 against the previous link's 32.7" in line
    kept = {**_link(20, 2), "restarted": False, "restart_cause": None, "carried_explained_variance": None,
            "previous_l0": 30.0, "continued_l0": 31.25}  # fmt: skip
    text = write_report(tmp_path, "/runs/x", [_link(0, 0), by_l0, kept], _readings(None), {}).read_text()
    assert "<td>continued L0 128.0 vs 32.7, restart</td>" in text and "<td>continued L0 31.2 vs 30.0</td>" in text
    assert _band_pixels(tmp_path / LIVE_DIR / "drift.png") > 1000
    assert _band_pixels(tmp_path / LIVE_DIR / "drift.png") > 1000  # the break is shaded between steps 0 and 10
    write_report(tmp_path, "/runs/x", [_link(0, 0), _link(10, 1), _link(20, 2)], _readings(None), {})
    assert _band_pixels(tmp_path / LIVE_DIR / "drift.png") == 0


def _band_pixels(png: Path) -> int:
    """Pixels of the plot's pale red restart band (#d62728 at 15% over white)."""
    rgb = plt.imread(png)[..., :3]
    return int(((rgb[..., 0] > 0.95) & (rgb[..., 1] > 0.8) & (rgb[..., 1] < 0.92) & (rgb[..., 2] < 0.92)).sum())
