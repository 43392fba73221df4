"""``run_all.py`` end to end at the smoke size: every figure, the results JSON, and a second run that does nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from saetrack import paths
from saetrack.cli import run as run_command
from saetrack.config import get_preset
from saetrack.notebooks import NotebookFailed, run_notebook
from saetrack.pipeline.parallel import STREAM_ECHO_EVERY_S, _echo_line
from saetrack.pipeline.stages import STAGES
from saetrack.plots.common import FIGURES
from saetrack.rates import Rates

sys.path.insert(0, str(paths.REPO_ROOT))
import run_all


def test_failing_notebook_names_notebook_cell_error_and_partial_copy(tmp_path: Path, monkeypatch) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = x / 0  # boom")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "99_broken.ipynb")
    monkeypatch.setattr("saetrack.notebooks.NOTEBOOK_DIR", notebooks)
    with pytest.raises(NotebookFailed) as info:
        run_notebook("99_broken.ipynb", {}, tmp_path / "run")
    message = str(info.value)
    assert "99_broken.ipynb" in message and "cell [2]" in message and "ZeroDivisionError" in message
    partial = tmp_path / "run" / paths.NOTEBOOKS_DIR / "99_broken.ipynb"
    assert f"partly executed copy: {partial}" in message and partial.exists()


def test_bad_arguments_are_refused_with_the_allowed_values(capsys) -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--preset", "no-such-preset"])
    assert "allowed presets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_all.main(["--preset", "smoke", "--only", "nonsense"])
    assert "not stages" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_all.main(["--preset", "smoke", "--chain-from-hub", "me/chain"])
    assert "--chain-revision" in capsys.readouterr().err


def test_run_all_smoke_writes_every_figure_and_a_second_run_does_nothing(smoke_pipeline, capsys) -> None:
    run_dir, first = smoke_pipeline  # run_all.py --preset smoke --device cpu, run once for the session
    assert run_dir == paths.run_dir("smoke")
    for stage in STAGES:
        assert f"[smoke:{stage.name}] done in" in first
        assert f"\n  smoke:{stage.name} | " in first  # the notebook's output, streamed while it ran
    assert "\r" not in first  # progress bars arrive as whole lines (not a terminal)
    assert "    (smoke-s) [smoke-s:cache] running" in first  # the scale study's sizes, through its notebook
    figures = paths.figures_dir("smoke")
    missing = [
        f"{stem}{suffix}"
        for stem, _ in FIGURES.values()
        for suffix in (".png", ".pdf")
        if not (figures / f"{stem}{suffix}").exists()
    ]
    assert not missing, f"figures not written: {missing}"
    results = json.loads((paths.run_dir("smoke") / paths.RESULTS_JSON).read_text())
    assert {"chain", "formation", "drift", "scale"} <= set(results)
    assert [s["preset"] for s in results["scale"]["sizes"]] == ["smoke-s", "smoke-m", "smoke"]
    executed = {p: p.stat().st_mtime_ns for p in (paths.run_dir("smoke") / paths.NOTEBOOKS_DIR).glob("*.ipynb")}
    assert len(executed) == len(STAGES)

    assert run_all.main(["--preset", "smoke", "--device", "cpu"]) == 0
    second = capsys.readouterr().out
    for stage in STAGES:
        assert f"[smoke:{stage.name}] up to date, nothing to do" in second
    assert "running" not in second
    assert {p: p.stat().st_mtime_ns for p in executed} == executed  # no notebook executed again


def test_scale_children_echo_stage_lines_and_a_streamed_line_now_and_then() -> None:
    assert _echo_line("[smoke-s:cache] running 01_cache_activations.ipynb: ...\n", 0.0, 0.0)
    assert _echo_line("saetrack: finished in 3.0 s\n", 0.0, 0.0)
    assert not _echo_line("[IPKernelApp] WARNING | something\n", 0.0, 0.0)
    streamed = "  smoke-s:chain | link 3/8 (step 2):  40%|####      | 2/5 [00:02<00:03]\n"
    assert _echo_line(streamed, STREAM_ECHO_EVERY_S, 0.0)
    assert not _echo_line(streamed, STREAM_ECHO_EVERY_S - 1.0, 0.0)
    assert not _echo_line("a traceback line\n", STREAM_ECHO_EVERY_S, 0.0)


def test_a_second_run_all_on_the_same_run_directory_is_refused(tmp_path: Path, capsys) -> None:
    held = run_command._lock_run_dir(tmp_path)
    assert held is not None
    try:
        assert run_all.main(["--preset", "smoke", "--run-dir", str(tmp_path)]) == 2
        assert "another run is working on" in capsys.readouterr().err
    finally:
        held.close()
    again = run_command._lock_run_dir(tmp_path)  # released with the first holder
    assert again is not None
    again.close()


def test_plan_prints_the_resource_plan_of_a_paper_preset_without_running_anything(capsys) -> None:
    assert run_all.main(["--preset", "pythia-410m-l4", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "resource plan of preset pythia-410m-l4 (streamed activations" in out
    for stage in ("corpus", "cache", "chain", "formation", "drift", "total"):
        assert f"\n{stage}" in out
    assert not (paths.run_dir("pythia-410m-l4") / "corpus").exists()


def test_plan_of_the_crosscoder_papers_preset_says_it_does_not_fit(capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        run_command, "machine_limits", lambda run_dir, device: {"disk": 64 * 10**9, "host": 128 * 10**9}
    )
    assert run_all.main(["--preset", "pythia-160m-l6", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "\ncrosscoder" in out and "\nstatistics" in out and "at 32 snapshots (29.5 TB, float32)" in out
    assert "the run does not fit this machine: disk: the run needs 29,5" in out


def test_a_hub_chain_pinned_to_a_branch_is_one_clear_message(tmp_path: Path, capsys, hub_offline) -> None:
    argv = ["--preset", "smoke", "--run-dir", str(tmp_path / "run"), "--chain-from-hub", "me/chain"]
    assert run_all.main([*argv, "--chain-revision", "main"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saetrack: cannot load the chain me/chain@main:") and "Traceback" not in err
    assert "40" in err  # names what a pin must be


def test_plan_prints_the_measured_times_of_the_last_run_beside_the_projection(tmp_path: Path, capsys) -> None:
    stage = STAGES[1]
    stage.mark_done(get_preset("smoke"), tmp_path, 125.0)
    assert run_all.main(["--preset", "smoke", "--plan", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\nscale smoke-s" in out and "\nseeds " in out  # notebook 05: each other size and seed run
    assert f"measured in {tmp_path}" in out and f"{stage.name} 2 min" in out


WRONG_TYPES = [("seed=abc", "run.seed = 'abc' is invalid: must be int"),
               ("chain.l1_coefficient=abc", "chain.l1_coefficient = 'abc' is invalid: must be float")]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), WRONG_TYPES)
def test_a_set_value_of_the_wrong_type_is_one_message(override: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_all.main(["--preset", "smoke", "--plan", "--set", override])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and "Traceback" not in err


def test_a_local_model_folder_that_does_not_exist_is_one_message(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-suite"
    with pytest.raises(SystemExit) as stopped:
        argv = ["--preset", "smoke", "--plan", "--set", "model.source=local", "--set", f"model.local_path={missing}"]
        run_all.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"model.local_path = '{missing}' is not a folder" in err


def test_plan_says_when_a_preset_is_meant_for_a_gpu(capsys, monkeypatch) -> None:
    monkeypatch.setattr(run_command, "measure_rates", lambda device: Rates("cpu", 1e11, 1e11))
    assert run_all.main(["--preset", "pythia-410m-l4", "--plan", "--device", "cpu"]) == 0
    assert "the preset is meant for a GPU" in capsys.readouterr().out
    assert run_all.main(["--preset", "smoke", "--plan", "--device", "cpu"]) == 0
    assert "meant for a GPU" not in capsys.readouterr().out
