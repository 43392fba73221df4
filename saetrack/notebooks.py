"""Running the numbered notebooks through papermill, with errors that say where a notebook failed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from saetrack import paths
from saetrack.config.run import RunConfig

__all__ = [
    "NOTEBOOK_DIR",
    "NotebookFailed",
    "NotebookRun",
    "notebook_parameters",
    "run_notebook",
]


#: Folder of the committed (output-free) notebooks.
NOTEBOOK_DIR = paths.REPO_ROOT / "notebooks"


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error, and where the partial copy is."""


@dataclass(frozen=True)
class NotebookRun:
    """Where an executed notebook went and how long it took."""

    notebook: str
    output: Path
    seconds: float


def notebook_parameters(run: RunConfig, run_dir: Path, force: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Papermill parameters built from a validated config (the notebook validates them once more)."""
    return {
        "PRESET": run.preset,
        "CONFIG_JSON": json.dumps(run.to_dict()),
        "RUN_DIR": str(run_dir),
        "FORCE": force,
        "DEVICE": device,
    }


def run_notebook(
    name: str,
    parameters: dict[str, Any],
    run_dir: Path,
    *,
    kernel_name: str = "python3",
    progress: bool = False,
    echo: TextIO | None = None,
) -> NotebookRun:
    """Execute ``notebooks/<name>`` with papermill into ``run_dir/notebooks/<name>`` and return where it went.

    On failure raises :class:`NotebookFailed` with the notebook, the failing cell's number and source,
    the error, and the path of the partly executed copy (papermill saves it cell by cell). ``echo`` (e.g.
    ``sys.stdout``) receives the cells' printed output while they run (long stages show their progress).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = NOTEBOOK_DIR / name
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source}")
    output = Path(run_dir) / paths.NOTEBOOKS_DIR / name
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            progress_bar=progress,
            cwd=str(NOTEBOOK_DIR),
            stdout_file=echo,
        )
    except PapermillExecutionError as error:
        first_line = (error.source or "").strip().splitlines()[:3]
        raise NotebookFailed(
            f"notebook {name} failed in cell [{error.exec_count}] (cell index {error.cell_index}):\n"
            f"    {' | '.join(first_line)}\n"
            f"{error.ename}: {error.evalue}\n"
            f"partly executed copy: {output}"
        ) from None
    return NotebookRun(name, output, time.perf_counter() - started)
