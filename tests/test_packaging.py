"""The package as a wheel: every subpackage inside it, every module importable from it in a fresh virtual environment
without the source tree, and the ``saetrack`` console command installed with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from saetrack import paths

PACKAGE = paths.REPO_ROOT / "saetrack"

#: Imports every module of the installed package and prints the folder each came from (one line per module).
IMPORT_ALL = """
import importlib, pkgutil, saetrack
names = [m.name for m in pkgutil.walk_packages(saetrack.__path__, "saetrack.")]
for name in ["saetrack", *names]:
    print(name, importlib.import_module(name).__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy of what the package is made of, so a stale build/ folder in the checkout cannot fill the gaps
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(paths.REPO_ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "saetrack", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
               str(source)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("saetrack-*.whl")
    return built


def test_the_wheel_holds_every_module_of_the_source_tree(wheel: Path) -> None:
    source = {p.relative_to(paths.REPO_ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.endswith(".py")}
    assert source - packed == set()
    assert {name.split("/")[1] for name in packed if name.count("/") > 1} >= {
        "config", "data", "sae", "analysis", "stages", "plots", "hub", "crosscoder", "ledger", "pipeline"
    }  # fmt: skip
    assets = PACKAGE / "stages" / "explorer" / "assets"  # the explorer's page, script, style and vendored Plotly.js
    wanted = {p.relative_to(paths.REPO_ROOT).as_posix() for p in assets.rglob("*") if p.is_file()}
    with zipfile.ZipFile(wheel) as archive:
        assert wanted and wanted <= set(archive.namelist())


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment whose only saetrack is the one pip installs into it; the dependencies (torch and the
    rest, gigabytes) are borrowed from this environment's site-packages through a ``.pth`` path line, which adds the
    folder to ``sys.path`` without running the editable install's own ``.pth`` hook there. Returns its ``bin``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    (site,) = root.glob("lib/python3.*/site-packages")
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    return root / "bin"


@pytest.mark.slow
def test_a_fresh_venv_with_the_wheel_imports_every_module_and_runs_saetrack(wheel: Path, tmp_path: Path) -> None:
    # installed by pip into a fresh virtual environment and run from a working directory outside the checkout: every
    # module must come from the wheel, none from the source tree, and the console command must be there
    bin_dir = _fresh_venv(tmp_path / "venv")
    install = [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps", "-q",
               str(wheel)]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, text=True, timeout=300)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"MPLBACKEND": "Agg"}
    done = subprocess.run([bin_dir / "python", "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    imported = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    expected = {"saetrack." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    expected = {name.removesuffix(".__init__") for name in expected} | {"saetrack"}
    assert set(imported) == expected
    venv = str((tmp_path / "venv").resolve())
    outside = {name: where for name, where in imported.items() if not str(Path(where).resolve()).startswith(venv)}
    assert outside == {}, f"modules imported from outside the wheel: {sorted(outside)[:5]}"
    helped = subprocess.run([bin_dir / "saetrack", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert helped.returncode == 0 and "usage: saetrack" in helped.stdout and "run" in helped.stdout, helped.stderr
    helped = subprocess.run([bin_dir / "saetrack", "run", "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert helped.returncode == 0 and "--preset" in helped.stdout and "``" not in helped.stdout
