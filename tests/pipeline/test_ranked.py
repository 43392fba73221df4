"""``torchrun --nproc-per-node 2 -m saetrack run --preset smoke`` (2 ``gloo`` ranks on the CPU, started by the test):
the chain, baselines and crosscoders computed data-parallel, then formation, drift and notebook 06's evaluation by
rank 0, equal the single-process smoke run's within the float tolerance of data-parallel training; selecting stages
under torchrun keeps to the selection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from saetrack import paths, store
from saetrack.cli.run import _ranked_segments
from saetrack.config import get_preset
from saetrack.distributed.ranks import Ranks
from saetrack.pipeline.ranked import data_parallel_stages, run_data_parallel

#: What the data-parallel chain may differ by from the single-process chain (``tests/distributed/test_stages.py``),
#: and what formation's and drift's float numbers computed from it may differ by (measured: 1e-6 at most).
WEIGHT_TOLERANCE, NUMBER_TOLERANCE = 1e-5, 1e-4

#: Arrays not compared element by element, and why. Weights 1e-6 apart move activations by as much, which reorders
#: contexts whose activations tie to that precision (measured: 3% of the top-25 indices, in the lists' tails), so the
#: top contexts are compared by their activation values (``top_values``, within the tolerance); and UMAP's 2-D layout
#: is a nonlinear optimisation that turns any change of its input into another layout (measured: 22 units apart).
NOT_ELEMENTWISE = {"top_indices": "compared through top_values", "umap_embeddings": "a layout, not a number"}


def torchrun(run_dir: Path, *options: str, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 -m saetrack run`` into ``run_dir`` (outputs
    and figures kept under it), one thread per rank."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = [*launcher, "-m", "saetrack", "run", "--preset", "smoke", "--device", "cpu", "--run-dir", str(run_dir),
               "--quiet", *options]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAETRACK_FIGURES": str(run_dir.parent / "figures")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=paths.REPO_ROOT)


@pytest.fixture(scope="module")
def ranked_smoke(smoke_pipeline: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The smoke run's inputs (corpus, model, cache: copied, not rebuilt) and a 2-rank torchrun of notebooks 01-04
    and 06."""
    single, _ = smoke_pipeline
    run_dir = tmp_path_factory.mktemp("torchrun") / "smoke"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(single / folder, run_dir / folder)
    done = torchrun(run_dir, "--only", "cache", "chain", "formation", "drift", "crosscoder")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return run_dir, done.stdout + done.stderr


def test_torchrun_trains_the_chain_on_both_ranks_and_rank_0_draws(ranked_smoke: tuple[Path, str]) -> None:
    run_dir, printed = ranked_smoke
    assert "data-parallel over 2 ranks" in printed
    assert "rank 1 of 2: data-parallel stages done; rank 0 goes on" in printed
    assert "[smoke:formation] done in" in printed and "[smoke:drift] done in" in printed
    assert "[smoke:crosscoder] the crosscoder and its controls, data-parallel over 2 ranks" in printed
    assert "[smoke:crosscoder] done in" in printed  # rank 0's notebook 06, after drift (its input)
    assert printed.index("[smoke:drift] done in") < printed.index("[smoke:crosscoder] running")
    assert "[smoke:scale]" not in printed and "[smoke:explorer]" not in printed  # --only kept
    trained = (run_dir / paths.CROSSCODER_DIR / "model" / "crosscoder.safetensors").stat().st_mtime_ns
    assert trained < (run_dir / paths.FORMATION_DIR / "manifest.json").stat().st_mtime_ns  # notebook 06 did not retrain


@pytest.mark.parametrize("folder", [paths.CHAIN_DIR, paths.BASELINE_DIR])
def test_torchrun_sae_weights_equal_the_single_process_run(
    ranked_smoke: tuple[Path, str], smoke_pipeline: tuple[Path, str], folder: str
) -> None:
    (ranked, _), (single, _) = ranked_smoke, smoke_pipeline
    run = get_preset("smoke")
    for step in run.sae_steps if folder == paths.CHAIN_DIR else run.baseline_steps:
        rel = Path(folder) / paths.step_dir_name(step) / "sae_weights.safetensors"
        a, b = load_file(ranked / rel), load_file(single / rel)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=WEIGHT_TOLERANCE, err_msg=f"step {step} {name}")


@pytest.mark.parametrize("name", ["model", "controls/repeated", "controls/dropped_early", "controls/centred"])
def test_torchrun_crosscoders_equal_the_single_process_run(
    ranked_smoke: tuple[Path, str], smoke_pipeline: tuple[Path, str], name: str
) -> None:
    (ranked, _), (single, _) = ranked_smoke, smoke_pipeline
    folder = Path(paths.CROSSCODER_DIR) / name
    for file in sorted((single / folder).glob("*.safetensors")) + sorted((single / folder).glob("*.npz")):
        read = load_file if file.suffix == ".safetensors" else np.load
        a, b = read(ranked / folder / file.name), read(file)
        assert sorted(a.keys()) == sorted(b.keys()) and len(a.keys()) > 0, file.name
        for key in a.keys():
            if a[key].dtype.kind == "f":
                worst = float(np.abs(a[key] - b[key]).max())
                print(f"{folder}/{file.name}:{key}: 2 ranks vs 1 process, largest difference {worst:.3g}")
                assert worst < WEIGHT_TOLERANCE, f"{file.name}:{key}"
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{file.name}:{key}")


@pytest.mark.parametrize("folder", [paths.FORMATION_DIR, paths.DRIFT_DIR, paths.CROSSCODER_DIR])
def test_torchrun_analyses_equal_the_single_process_run(
    ranked_smoke: tuple[Path, str], smoke_pipeline: tuple[Path, str], folder: str
) -> None:
    (ranked, _), (single, _) = ranked_smoke, smoke_pipeline
    files = sorted((single / folder).glob("*.npz"))
    assert files and store.read_manifest(ranked / folder) is not None
    for file in files:
        a, b = np.load(ranked / folder / file.name), np.load(file)
        assert a.files == b.files
        for key in a.files:
            if key in NOT_ELEMENTWISE:
                assert a[key].shape == b[key].shape, key
            elif a[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=NUMBER_TOLERANCE, atol=NUMBER_TOLERANCE,
                                           err_msg=f"{file.name}:{key}")  # fmt: skip
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{file.name}:{key}")


def test_the_data_parallel_stages_follow_only_and_skip() -> None:
    assert data_parallel_stages(None, ()) == ["cache", "chain", "crosscoder"]
    assert data_parallel_stages(["chain", "drift"], ()) == ["chain"]
    assert data_parallel_stages(None, ("chain",)) == ["cache", "crosscoder"]  # a chain installed from the Hub
    assert data_parallel_stages(["formation"], ()) == []


def test_rank_0_runs_the_notebooks_in_pipeline_order_forcing_only_the_others() -> None:
    assert _ranked_segments(None, ()) == [
        (["cache", "chain"], True),
        (["formation", "drift", "scale"], False),
        (["crosscoder"], True),  # after drift, which notebook 06 reads
        (["explorer"], False),
    ]
    assert _ranked_segments(["drift", "chain"], ("cache",)) == [(["chain"], True), (["drift"], False)]


def test_a_job_of_several_layers_trains_each_layer_in_its_folder(smoke) -> None:  # type: ignore[no-untyped-def]
    from saetrack.pipeline.ranked import _runs

    multi = smoke.with_overrides({"cache.layers": [0, 1]})
    assert [(r.cache.layer, d.name) for r, d in _runs(multi, Path("run"))] == [(0, "layer0"), (1, "layer1")]
    assert _runs(smoke, Path("run")) == [(smoke, Path("run"))]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_before_any_work(smoke, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    three = Ranks(0, 3)  # no process group: refused before the first collective
    with pytest.raises(ValueError, match=r"crosscoder\.batch_size = 256 does not split over 3 ranks"):
        run_data_parallel(smoke, tmp_path, three, device="cpu", only=["crosscoder"])
    with pytest.raises(ValueError, match=r"chain\.batch_size = \d+ does not split over 3 ranks"):
        run_data_parallel(smoke, tmp_path, three, device="cpu", only=["chain"])
    assert list(tmp_path.iterdir()) == []
