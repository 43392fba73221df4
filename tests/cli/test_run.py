"""The ``saetrack`` command: its help answers without loading torch, ``run`` takes ``run_all.py``'s options, and bad
input ends in one message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from saetrack import cli, paths
from saetrack.pipeline.shape import STAGE_NAMES

#: Parses ``saetrack --help`` and ``saetrack run --help`` and says which heavy libraries that imported.
HELP_IMPORTS = """
import contextlib, io, sys
from saetrack.cli import main
for argv in (["--help"], ["run", "--help"], ["watch", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
print(sorted(name for name in ("torch", "transformer_lens", "papermill", "matplotlib") if name in sys.modules))
"""


def test_help_loads_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=120,
                          cwd=paths.REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_names_the_subcommand_the_presets_and_the_stages_without_markup(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and "usage: saetrack" in out and "run the pipeline" in out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "usage: saetrack run" in out and "'smoke'" in out and all(name in out for name in STAGE_NAMES)
    assert "``" not in out and ":func:" not in out


def test_no_subcommand_prints_the_help_and_fails(capsys) -> None:
    assert cli.main([]) == 2
    assert "usage: saetrack" in capsys.readouterr().out


def test_run_plans_a_preset_and_refuses_a_bad_value_with_one_message(capsys) -> None:
    assert cli.main(["run", "--preset", "smoke", "--plan", "--device", "cpu"]) == 0
    assert "smoke" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--preset", "smoke", "--plan", "--set", "seed=abc"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "seed = 'abc' is invalid" in err and "Traceback" not in err
    assert err.count("error:") == 1  # the usage and one message


def test_ranks_plan_a_torchrun_job_and_a_bad_count_is_one_message(capsys) -> None:
    assert cli.main(["run", "--preset", "smoke", "--plan", "--device", "cpu", "--ranks", "2"]) == 0
    out = capsys.readouterr().out
    assert "over 2 ranks (memory per rank" in out and "data-parallel over 2 ranks" in out
    for options, message in ((["--plan", "--ranks", "3"], "--ranks 3: the ranks must split chain.batch_size = 512"),
                             (["--ranks", "2"], "--ranks plans a torchrun job (with --plan)")):  # fmt: skip
        with pytest.raises(SystemExit) as stopped:
            cli.main(["run", "--preset", "smoke", "--device", "cpu", *options])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and message in err and "Traceback" not in err


def test_plan_spread_deals_the_units_over_the_ranks(capsys) -> None:
    options = ["run", "--preset", "smoke", "--plan", "--device", "cpu", "--set", "cache.layers=[0,1]", "--spread"]
    assert cli.main([*options, "--ranks", "3"]) == 0  # a spread unit trains on one rank: 3 need not split the batch
    out = capsys.readouterr().out
    assert "spread over 3 ranks (--spread): 15 units" in out and "  rank 0: inputs" in out  # 7 a layer + inputs
    assert "layer0/crosscoder" in out and "layer1/crosscoder" in out
    assert "data-parallel" not in out  # the table is the one-process plan


def test_unknown_stages_are_named_with_the_known_ones(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--preset", "smoke", "--only", "train", "--plan"])
    assert f"are not stages; stages: {list(STAGE_NAMES)}" in capsys.readouterr().err


def test_run_takes_a_whole_config_file_and_names_a_bad_one(tmp_path, capsys) -> None:
    from saetrack import store
    from saetrack.config import get_preset

    config = tmp_path / "run_config.json"
    store.write_json(config, get_preset("smoke").with_overrides({"preset": "my-run"}).to_dict())
    assert cli.main(["run", "--config", str(config), "--plan", "--device", "cpu"]) == 0
    assert "my-run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--config", str(tmp_path / "missing.json"), "--plan"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "cannot read a run config" in err and "Traceback" not in err


def test_several_layers_plan_per_layer_and_refuse_one_chain_options(capsys) -> None:
    assert cli.main(["run", "--preset", "smoke", "--plan", "--device", "cpu", "--set", "cache.layers=[0,1]"]) == 0
    out = capsys.readouterr().out
    assert "hooks blocks.{0,1}.hook_resid_pre, one run per layer" in out
    assert "L0 chain" in out and "L1 chain" in out and "L1 corpus" not in out
    assert not any(line.startswith(("L0 scale", "L1 scale")) for line in out.splitlines())  # not run per layer
    assert "one forward per batch to this, the deepest layer" in out
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--preset", "smoke", "--set", "cache.layers=[0,1]", "--push-to-hub", "me/chain"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "not with cache.layers" in err and "Traceback" not in err


@pytest.mark.slow
def test_several_layers_run_each_layer_in_its_folder_with_its_figures(smoke_run_dir, tmp_path, capsys) -> None:
    import shutil

    from saetrack import store
    from saetrack.config import get_preset
    from saetrack.data.cache_plan import cache_config_hash

    run_dir = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR):  # the smoke suite, so it is not trained again
        shutil.copytree(smoke_run_dir / folder, run_dir / folder)
    argv = ["run", "--preset", "smoke", "--set", "cache.layers=[0,1]", "--only", "cache", "--run-dir", str(run_dir)]
    assert cli.main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    for layer in (0, 1):
        alone = get_preset("smoke").with_overrides({"cache.layer": layer})
        cache = store.read_manifest(run_dir / f"layer{layer}" / paths.CACHE_DIR)
        assert (
            cache["config_hash"] == cache_config_hash(alone) and cache["hook_name"] == f"blocks.{layer}.hook_resid_pre"
        )
        assert (run_dir / f"layer{layer}" / paths.NOTEBOOKS_DIR / "01_cache_activations.ipynb").exists()
        assert (paths.figures_dir("smoke") / f"layer{layer}" / "figS01_lm_loss.png").exists()
        assert f"[smoke/layer{layer}:cache] done in" in out
    assert not (run_dir / paths.CACHE_DIR).exists()  # no cache of the run itself: its layers have theirs
