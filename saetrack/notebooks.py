"""Running the numbered notebooks through papermill, with errors that say where a notebook failed.

While a notebook runs, its cells' printed output and progress bars can be streamed to a terminal (or any text
stream), each line prefixed with a label such as ``smoke:cache`` (:mod:`saetrack.echo`). Kernels talk to us over
Unix sockets in a private temporary folder (:mod:`saetrack.kernel`): nothing listens on a TCP port, and the
kernel's "running over TCP without encryption" warning is not printed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from traitlets.config import Config

from saetrack import paths
from saetrack.config.run import RunConfig
from saetrack.echo import PROGRESS_EVERY_S, OutputEcho
from saetrack.kernel import IPCKernelManager

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
    label: str = "",
    live: bool | None = None,
    progress_every: float | None = None,
) -> NotebookRun:
    """Execute ``notebooks/<name>`` with papermill into ``run_dir/notebooks/<name>`` and return where it went.

    On failure raises :class:`NotebookFailed` with the notebook, the failing cell's number and source,
    the error, and the path of the partly executed copy (papermill saves it cell by cell). ``echo`` (e.g.
    ``sys.stdout``) receives the cells' printed output and progress bars while they run, each line prefixed with
    ``label`` (default: the notebook's name); ``live`` and ``progress_every`` are :class:`OutputEcho`'s. The
    kernel runs over IPC (:class:`IPCKernelManager`); its process's own log goes to ``<name>.kernel.log`` beside the
    executed copy (removed when empty; named in the error when the run fails otherwise than in a cell).
    ``progress`` shows papermill's own bar over the cells.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = NOTEBOOK_DIR / name
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source}")
    output = Path(run_dir) / paths.NOTEBOOKS_DIR / name
    output.parent.mkdir(parents=True, exist_ok=True)
    kernel_log = output.with_name(f"{output.stem}.kernel.log")
    streams: OutputEcho | None = None
    if echo is not None:
        every = PROGRESS_EVERY_S if progress_every is None else progress_every
        streams = OutputEcho(echo, label or Path(name).stem, live=live, progress_every=every)
    started = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            progress_bar=progress,
            cwd=str(NOTEBOOK_DIR),
            stdout_file=streams.stdout if streams else None,
            stderr_file=streams.stderr if streams else None,
            kernel_manager_class=IPCKernelManager,
            config=Config(
                {
                    "IPCKernelManager": {
                        "extra_env": streams.kernel_env() if streams else {},
                        "kernel_log": str(kernel_log),
                    }
                }
            ),
        )
    except PapermillExecutionError as error:
        first_line = (error.source or "").strip().splitlines()[:3]
        raise NotebookFailed(
            f"notebook {name} failed in cell [{error.exec_count}] (cell index {error.cell_index}):\n"
            f"    {' | '.join(first_line)}\n"
            f"{error.ename}: {error.evalue}\n"
            f"partly executed copy: {output}"
        ) from None
    except Exception as error:  # the kernel died, did not start, or timed out: its log may say why
        if kernel_log.exists() and kernel_log.stat().st_size:
            error.add_note(f"the kernel's own log: {kernel_log}")
        raise
    finally:
        if streams is not None:
            streams.finish()
        if kernel_log.exists() and not kernel_log.stat().st_size:
            kernel_log.unlink()
    return NotebookRun(name, output, time.perf_counter() - started)
