"""A spread job over two ranks (new processes, one thread each, sharing only the run directory): two smoke layers'
chains, baselines, seed controls, noise floors, formation and drift are, byte for byte, each layer's own
single-process run; a rank killed mid-chain and the job started again finishes with the same weights, redoing only
the unfinished links; under ``torchrun``, ``saetrack run --spread`` deals the units out and rank 0 draws."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from saetrack import cli, paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.distributed.ranks import Ranks
from saetrack.pipeline import headless
from saetrack.pipeline.layers import layer_folders
from saetrack.pipeline.spread import SPREAD_DIR, run_spread
from saetrack.stages import chain
from saetrack.stages.chain.seed_control import train_seed_controls

STAGES = ["cache", "chain", "formation", "drift"]
#: The link of layer 1's chain after which its rank dies in the interrupted job.
KILL_AFTER_LINKS = 3


#: Two smoke layers over the suite's first four checkpoints, without UMAP panels (each rank process would compile
#: umap-learn's numba code: most of the test's time; the embedding's determinism is tested in tests/analysis).
OVERRIDES = {"cache.layers": [0, 1], "chain.schedule": [0, 1, 2, 3], "chain.baseline": [2, 3],
             "formation.umap_token_features": 0, "formation.umap_concept_features": 0}  # fmt: skip


def _multi() -> RunConfig:
    return get_preset("smoke").with_overrides(OVERRIDES)


def _rank(rank: int, world: int, run_dir: str, only: list[str], kill: bool) -> None:
    """One rank of a spread job; with ``kill``, the rank that trains layer 1's chain dies (as by SIGKILL) after its
    third link, first noting which links it had finished and when."""
    torch.set_num_threads(1)
    if kill:
        train_chain = chain.train_chain

        def dying(run: RunConfig, folder: Path, **kw: Any) -> Any:
            finished: list[int] = []

            def after_link(step: int) -> None:
                finished.append(step)
                if folder.name == "layer1" and len(finished) == KILL_AFTER_LINKS:
                    files = {s: (folder / paths.CHAIN_DIR / paths.step_dir_name(s) / "sae_weights.safetensors")
                             for s in finished}  # fmt: skip
                    store.write_json(Path(run_dir) / "killed.json", {"folder": str(folder),
                                     "mtimes": {str(s): f.stat().st_mtime_ns for s, f in files.items()}})  # fmt: skip
                    os._exit(9)

            return train_chain(run, folder, after_link=after_link, **kw)

        chain.train_chain = dying  # the unit resolves its function when the job lists its units
    run_spread(_multi(), Path(run_dir), Ranks(rank, world, rank), device="cpu", only=only, log=lambda _: None,
               poll_s=0.2)  # fmt: skip


def _job(run_dir: Path, only: list[str], kill: bool = False) -> None:
    mp.start_processes(_rank, args=(2, str(run_dir), only, kill), nprocs=2, start_method="spawn")


def _alone(rank: int, run_dir: str) -> None:
    """The reference: each layer's own single-layer run (notebooks 01-04's functions and the seed control of notebook
    02's comparison), one after the other in one process on one thread."""
    torch.set_num_threads(1)
    for layer_run, folder in layer_folders(_multi(), Path(run_dir)).values():
        headless.run_headless(layer_run, folder)
        train_seed_controls(layer_run, folder, progress=False)


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("spread") / "run"
    _job(run_dir, STAGES)
    return run_dir


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("alone") / "run"
    mp.start_processes(_alone, args=(str(run_dir),), nprocs=1, start_method="spawn")
    return run_dir


def _files(run_dir: Path, layer: int, pattern: str) -> dict[str, bytes]:
    folder = run_dir / paths.layer_dir_name(layer)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}


def test_both_ranks_took_units_and_every_unit_is_done(spread: Path) -> None:
    done = [store.read_json(p) for p in (spread / SPREAD_DIR / "done").glob("*.json")]
    assert len(done) == 13  # shared inputs + 2 layers x (chain, baselines, seed control, noise floor, formation, drift)
    assert {record["rank"] for record in done} == {0, 1}
    assert not list((spread / SPREAD_DIR / "claims").glob("*.json"))  # every claim given back


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize(
    "pattern",
    ["chain/step*/sae_weights.safetensors", "baseline/step*/sae_weights.safetensors",
     "comparison/seed_control/step*/sae_weights.safetensors", "noise_floor/*.npy", "formation/*.npz", "drift/*.npz"],
)  # fmt: skip
def test_each_layer_equals_its_own_single_process_run(spread: Path, alone: Path, layer: int, pattern: str) -> None:
    ours, theirs = _files(spread, layer, pattern), _files(alone, layer, pattern)
    assert ours and ours.keys() == theirs.keys()
    for name in ours:
        if name.endswith(".npz"):  # compressed archives: compare the arrays
            a, b = np.load(spread / f"layer{layer}" / name), np.load(alone / f"layer{layer}" / name)
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
        else:
            assert ours[name] == theirs[name], f"layer {layer}: {name} differs"


def test_a_rank_killed_mid_chain_resumes_to_the_same_weights(alone: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(ProcessException):
        _job(run_dir, ["cache", "chain"], kill=True)
    killed = store.read_json(run_dir / "killed.json")
    folder = Path(killed["folder"])
    assert store.read_manifest(folder / paths.CHAIN_DIR) is None  # the chain was left unfinished
    _job(run_dir, ["cache", "chain"])  # the job started again: the dead rank's claim is broken, its chain resumed
    for step, mtime in killed["mtimes"].items():  # the links finished before the kill were not trained again
        weights = folder / paths.CHAIN_DIR / paths.step_dir_name(int(step)) / "sae_weights.safetensors"
        assert weights.stat().st_mtime_ns == mtime
    for layer in (0, 1):
        for pattern in ("chain/step*/sae_weights.safetensors", "baseline/step*/sae_weights.safetensors"):
            assert _files(run_dir, layer, pattern) == _files(alone, layer, pattern)


def test_saetrack_run_spread_under_torchrun(spread: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(spread, run_dir)  # every unit done: the ranks find nothing to take and rank 0 draws
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    settings = [item for key, value in OVERRIDES.items() for item in ("--set", f"{key}={value}")]
    command = [*launcher, "-m", "saetrack", "run", "--preset", "smoke", *settings, "--spread", "--only", "chain",
               "--device", "cpu", "--run-dir", str(run_dir), "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAETRACK_FIGURES": str(tmp_path / "figures")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=paths.REPO_ROOT)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-4000:]
    assert "rank 1 of 2: every unit is done; rank 0 draws" in printed
    assert "[spread] rank 0 of 2: 6 units, 6 already done" in printed  # 2 layers x (chain, baselines, seed control)
    for layer in (0, 1):  # rank 0's notebooks found the computations current and drew
        assert f"[smoke/layer{layer}:chain] done in" in printed
        assert (run_dir / f"layer{layer}" / paths.NOTEBOOKS_DIR / "02_train_chain.done.json").is_file()
    assert "data-parallel" not in printed


def test_spread_refuses_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--preset", "smoke", "--spread", "--force", "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "--spread resumes every unit" in err and "Traceback" not in err
