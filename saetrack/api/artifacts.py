"""Where the run API finds a finished run's config and artifacts, and the errors it raises when one is missing.

A run directory (``runs/<preset>/``) holds one folder per stage output, each with a ``manifest.json`` that carries
the section of the config the stage ran with and its config hash (:mod:`saetrack.pipeline.skeleton`).
:func:`recover_config` rebuilds the whole :class:`~saetrack.config.run.RunConfig` from them: the preset's defaults,
every section a manifest records laid over them, and the result accepted only when it reproduces the chain's config
hash. A run made with overrides a manifest does not record (e.g. ``--set seed=1``) is recovered from the config the
pipeline passed to its notebooks (the executed copies under ``notebooks/``); anything else asks for the config.

:func:`loaded` runs a stage loader and turns "not there" or "made for another config" into a
:class:`StageNotRunError` naming the command that builds the stage.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from saetrack import paths, store
from saetrack.config.base import PRESETS, ConfigError
from saetrack.config.presets import get_preset
from saetrack.config.run import RunConfig
from saetrack.pipeline.shape import stage_of_output
from saetrack.stages.chain import chain_config_hash

__all__ = [
    "RunConfigError",
    "StageNotRunError",
    "StepNotInChainError",
    "loaded",
    "notebook_configs",
    "recover_config",
    "run_command",
]

T = TypeVar("T")


class StageNotRunError(FileNotFoundError):
    """A stage's output is missing from the run directory, or was made for another config than the chain's."""


class StepNotInChainError(KeyError):
    """A step that is not one of the chain's checkpoints (its message names the chain's steps)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunConfigError(ValueError):
    """The run directory's config cannot be recovered (no chain, or manifests that match no known config)."""


def run_command(preset: str, stage: str, extra: str = "") -> str:
    """The command that builds ``stage`` of ``preset`` (what an error message tells the reader to run)."""
    return f"saetrack run --preset {preset} --only {stage}{extra}"


def loaded(load: Callable[[], T], run_dir: Path, folder: str, run: RunConfig, what: str = "") -> T:
    """``load()``, with a missing or stale output of ``run_dir/folder`` raised as :class:`StageNotRunError` that
    names the stage to run (``saetrack run --preset <preset> --only <stage>``, the stage that writes ``folder``)."""
    stage = stage_of_output(folder, run)
    try:
        return load()
    except (store.StaleArtifactError, FileNotFoundError) as error:
        if isinstance(error, StageNotRunError):
            raise
        reason = str(error).strip("'\"") or type(error).__name__
        raise StageNotRunError(
            f"{what or 'the ' + stage + ' stage'} of {run_dir} is not available ({reason}); "
            f"run `{run_command(run.preset, stage)}` first."
        ) from error


def _manifest_sections(run_dir: Path) -> dict[str, Any]:
    """The config sections the stage manifests of ``run_dir`` record, by section name."""
    sections: dict[str, Any] = {}
    readers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        paths.CORPUS_DIR: lambda c: {"corpus": c},
        paths.MODEL_DIR: lambda c: {k: c[k] for k in ("corpus", "suite") if k in c},
        paths.CACHE_DIR: lambda c: {"cache": c["cache"]} if "cache" in c else {},
        paths.CHAIN_DIR: lambda c: {"chain": c["chain"]} if "chain" in c else {},
        paths.FORMATION_DIR: lambda c: {"formation": c},
        paths.DRIFT_DIR: lambda c: {"drift": c},
        paths.CROSSCODER_DIR: lambda c: {"crosscoder": c},
    }
    for folder, read in readers.items():
        manifest = store.read_manifest(run_dir / folder)
        if manifest is not None and isinstance(manifest.get("config"), dict):
            sections.update(read(manifest["config"]))
    return sections


def _from_manifests(run_dir: Path, preset: str) -> RunConfig | None:
    """The preset's config with every section a stage manifest records laid over it; ``None`` for an unknown
    preset or sections that no longer validate."""
    if preset not in PRESETS:
        return None
    data = get_preset(preset).to_dict()
    data.update(_manifest_sections(run_dir))
    try:
        return RunConfig.from_dict(data)
    except (ConfigError, TypeError, ValueError):
        return None


def notebook_configs(run_dir: Path) -> Iterator[RunConfig]:
    """The configs the pipeline passed to the notebooks executed into ``run_dir/notebooks`` (their injected
    ``CONFIG_JSON`` parameter), newest notebook first; unreadable ones are skipped."""
    notebooks = sorted(Path(run_dir, paths.NOTEBOOKS_DIR).glob("*.ipynb"), key=lambda p: p.stat().st_mtime)
    for notebook in reversed(notebooks):
        try:
            cells = json.loads(notebook.read_text())["cells"]
            source = next(
                "".join(c["source"]) for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])
            )
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CONFIG_JSON":
                    value = ast.literal_eval(node.value)
                    if value:
                        yield RunConfig.from_dict(json.loads(value))
        except (OSError, ValueError, KeyError, StopIteration, SyntaxError, ConfigError, TypeError):
            continue


def recover_config(run_dir: Path) -> RunConfig:
    """The :class:`~saetrack.config.run.RunConfig` that made the chain of ``run_dir`` (see the module doc).

    Raises :class:`StageNotRunError` when the run has no finished chain, and :class:`RunConfigError` when neither
    the manifests nor the executed notebooks give a config that reproduces the chain's config hash.
    """
    chain = store.read_manifest(Path(run_dir) / paths.CHAIN_DIR)
    layers = sorted(p.parent.parent.name for p in Path(run_dir).glob(f"layer*/{paths.CHAIN_DIR}/{paths.MANIFEST}"))
    if chain is None and layers:  # a run of several layers (cache.layers): each layer's folder is a run
        raise StageNotRunError(
            f"{run_dir} is a run of several layers; open one layer's folder: "
            + ", ".join(str(Path(run_dir) / name) for name in layers)
        )
    if chain is None:
        raise StageNotRunError(
            f"{run_dir} holds no finished SAE chain (no {paths.CHAIN_DIR}/{paths.MANIFEST}); run "
            f"`{run_command(Path(run_dir).name, 'chain')}` (it runs the cache stage first when needed)."
        )
    wanted, preset = chain.get("config_hash"), str(chain.get("preset") or Path(run_dir).name)
    candidate = _from_manifests(Path(run_dir), preset)
    if candidate is not None and chain_config_hash(candidate) == wanted:
        return candidate
    for candidate in notebook_configs(Path(run_dir)):
        if chain_config_hash(candidate) == wanted:
            return candidate
    raise RunConfigError(
        f"cannot recover the config of {run_dir}: the preset {preset!r} with the sections its stage manifests record "
        f"does not reproduce the chain's config hash {wanted}, and no executed notebook carries one that does; pass "
        "the run's config: open_run(run_dir, config=get_preset(...).with_overrides({...}))."
    )
