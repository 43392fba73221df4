"""The run's results JSON: one section per notebook, replaced atomically, the others kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.results import read_results, update_results


def test_sections_are_replaced_and_others_kept(tmp_path: Path) -> None:
    assert read_results(tmp_path) == {}  # no notebook has written yet
    update_results(tmp_path, "chain", {"links": 8})
    whole = update_results(tmp_path, "formation", {"median": np.float32(0.5), "steps": (0, 1)})
    assert whole["chain"] == {"links": 8} and whole["formation"]["steps"] == (0, 1)  # as given
    assert read_results(tmp_path) == {"chain": {"links": 8}, "formation": {"median": 0.5, "steps": [0, 1]}}  # as JSON
    update_results(tmp_path, "chain", {"links": 9})
    assert read_results(tmp_path) == {"chain": {"links": 9}, "formation": {"median": 0.5, "steps": [0, 1]}}
    assert [p.name for p in tmp_path.iterdir()] == [paths.RESULTS_JSON]  # no temporary file left


def test_a_torn_results_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / paths.RESULTS_JSON).write_text('{"chain": ')
    with pytest.raises(store.StaleArtifactError, match="not valid JSON"):
        read_results(tmp_path)
