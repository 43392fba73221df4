"""The run's results JSON: the headline numbers each notebook measured, in one file per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saetrack import paths, store

__all__ = [
    "read_results",
    "update_results",
]


def read_results(run_dir: Path) -> dict[str, Any]:
    """The run's ``results.json`` (empty when no notebook has written to it yet)."""
    path = Path(run_dir) / paths.RESULTS_JSON
    return store.read_json(path) if path.exists() else {}


def update_results(run_dir: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Replace ``section`` of the run's ``results.json`` with ``values`` (atomically) and return the whole file."""
    results = read_results(run_dir)
    results[section] = values
    store.write_json(Path(run_dir) / paths.RESULTS_JSON, results)
    return results
