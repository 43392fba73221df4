"""The package as a wheel: every subpackage inside it, every module importable from it without the source tree."""

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


@pytest.mark.slow
def test_every_module_imports_from_the_installed_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    # installed into a folder of its own and imported from a working directory outside the checkout, with that
    # folder first on the path: every module must come from the wheel, none from the source tree
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, text=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    imported = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    expected = {"saetrack." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    expected = {name.removesuffix(".__init__") for name in expected} | {"saetrack"}
    assert set(imported) == expected
    outside = {name: where for name, where in imported.items() if not where.startswith(str(site))}
    assert outside == {}, f"modules imported from outside the wheel: {sorted(outside)[:5]}"
