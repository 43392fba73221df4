"""The drift noise floor (control (b) of issue 13): how far SAE training alone moves decoder directions.

Nano's links train at 10x the paper's link learning rate, so part of Fig. 6a's drift could be SAE-training noise
rather than the model changing. The floor measures it: starting from the chain's final SAE, ``M`` further links are
trained one after the other on the final checkpoint - an unchanged model - exactly as chain links (each initialised
from the previous one, the link hyperparameters, the final link's L1 coefficient, the optimizer policy and the link
token budget, through :func:`saetrack.stages.chain.links.train_link`), each with its own seed and on its own fresh
rows of the final checkpoint (the token plan gives that checkpoint ``M`` more link budgets after the final link's),
as each chain link reads fresh tokens. The decoder cosine of every feature after ``m`` links with its final direction
(Sec. 6.1) is the floor for the checkpoint ``m`` links before the final one: drift a chain shows inside the floor is
drift that SAE training and data sampling alone cause.

Cached and streamed activations both work through :func:`saetrack.data.activations.open_activations`. The noise
SAEs are not kept; their cosines are (``noise_floor/``, :func:`kept_noise_floor`), so the drift stage reuses them and a
spread job computes them as a unit of their own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saetrack import paths, store
from saetrack.analysis.drift import beyond_noise_floor, link_cosine_to_final
from saetrack.config.base import config_hash
from saetrack.config.run import RunConfig
from saetrack.data.activations import ActivationSource, open_activations
from saetrack.data.checkpoints import CheckpointSource, open_source
from saetrack.pipeline.skeleton import StageRun, run_stage
from saetrack.sae.io import load_training_sae
from saetrack.sae.model import SAETrackSAE
from saetrack.sae.recurrent import recurrent_init
from saetrack.stages.chain import OPTIMIZER_FILE, chain_config_hash, load_chain
from saetrack.stages.chain.links import (
    ACTIVATION_SCALE_ROWS,
    activation_scale,
    link_l1_coefficient,
    sae_metadata,
    train_link,
)

__all__ = [
    "NOISE_FLOOR_RULE",
    "kept_noise_floor",
    "noise_chain_cosines",
    "noise_floor_config_hash",
    "noise_floor_links",
    "noise_floor_numbers",
    "noise_link_seed",
    "run_noise_floor",
    "train_noise_floor",
]

#: In the run directory's ``noise_floor/`` (:data:`~saetrack.paths.NOISE_FLOOR_DIR`, with a manifest): the floor's
#: cosines, reused by the drift stage and computed apart by a spread job (:mod:`saetrack.pipeline.spread`).
COSINES_FILE = "cosines.npy"


#: What the floor is, as written into the drift stage's manifest.
NOISE_FLOOR_RULE = (
    "noise floor: links retrained on the unchanged final checkpoint - M links trained one after the other from the "
    "final SAE, each on its own fresh rows of the final checkpoint, as chain links (link lr, warm-up, token budget, "
    "the final link's L1 coefficient, optimizer policy), each with its own seed; the decoder cosine after m links "
    "with the final SAE is the floor for the checkpoint m links before the final"
)
#: Seed kind of noise-floor links (the chain's kinds are 0 chain, 1 baseline, 2 probe; see ``links.link_seed``).
NOISE_SEED_KIND = 3


def noise_link_seed(run: RunConfig, m: int) -> int:
    """The seed of noise-floor link ``m`` (1-based), derived from the run seed: each link shuffles differently."""
    return int(np.random.SeedSequence([run.chain_seed, NOISE_SEED_KIND, m]).generate_state(1)[0])


def noise_floor_links(run: RunConfig, n_checkpoints: int) -> int:
    """Links M of the noise floor: ``drift.noise_floor_links``, or ``n_checkpoints - 1`` (the chain's links after
    its first) when it is None; 0 disables the floor. For the run's own chain this is ``run.noise_floor_links``,
    which the token plan reads."""
    configured = run.drift.noise_floor_links
    return max(n_checkpoints - 1, 0) if configured is None else configured


def noise_chain_cosines(
    run: RunConfig,
    sae: SAETrackSAE,
    activations: ActivationSource,
    step: int,
    n_links: int,
    *,
    l1_coefficient: float,
    n_tokens: int,
    optimizer_state: dict[str, Any] | None = None,
    lr: float | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Decoder cosine with ``sae`` (Sec. 6.1) of every feature after each of ``n_links`` links retrained from it on
    the rows of checkpoint ``step`` (the noise floor of Fig. 6a): ``[n_links, F]``, row ``m - 1`` after ``m`` links.

    Each link starts from the previous one (:func:`~saetrack.sae.recurrent.recurrent_init` with ``l1_coefficient``)
    and trains on its own fresh rows ``[R + (m - 1) n_tokens, R + m n_tokens)``, after the ``R`` rows the final link
    may read (``n_tokens``, or the first link's budget under the continuity rule, ``chain.reserved_tokens_for``)
    with the chain's link lr (``lr`` overrides it) and warm-up, seeded by
    :func:`noise_link_seed`; with ``chain.optimizer_policy="carry"`` Adam's moments pass on from
    ``optimizer_state`` (the final link's). ``sae`` itself is left unchanged. The cosines are computed on the SAE's
    device a chunk of rows at a time (:func:`~saetrack.analysis.drift.link_cosine_to_final`; on the CPU the float64
    stack formula's numbers, bit for bit), with no host copy of the decoders.
    """
    chain = run.chain
    final = sae.W_dec.detach().clone()  # on the SAE's device: the cosines are computed there, a chunk at a time
    previous, state = sae, optimizer_state if chain.optimizer_policy == "carry" else None
    cosines = np.zeros((n_links, final.shape[0]))
    first_row = n_tokens if not chain.may_restart else chain.reserved_tokens_for(run.sae_steps.index(step))
    for m in range(1, n_links + 1):
        link = recurrent_init(previous, chain, l1_coefficient=l1_coefficient, device=str(sae.device),
                              metadata=sae_metadata(run, step))  # fmt: skip
        result = train_link(
            run,
            link,
            activations,
            step,
            start=first_row + (m - 1) * n_tokens,
            n_tokens=n_tokens,
            lr=chain.lr_link if lr is None else lr,
            warmup=chain.warmup_steps_link,
            seed=noise_link_seed(run, m),
            optimizer_state=state,
            keep_optimizer_state=chain.optimizer_policy == "carry",
            desc=f"noise-floor link {m}/{n_links} (step {step})",
            progress=progress,
        )
        previous = result.sae
        state = result.optimizer_state if chain.optimizer_policy == "carry" else None
        cosines[m - 1] = link_cosine_to_final(previous.W_dec.detach(), final)
    return cosines


def _final_l1(run: RunConfig, folder: Path, activations: ActivationSource, step: int) -> float:
    """The final link's L1 coefficient: from its manifest, else recomputed as the chain computed it."""
    manifest = store.read_manifest(folder) or {}
    if "link" in manifest:
        return float(manifest["link"]["l1_coefficient"])
    scale = activation_scale(activations.train_head(step, ACTIVATION_SCALE_ROWS))
    return link_l1_coefficient(run, scale, activations.d_model)


def run_noise_floor(
    run: RunConfig,
    run_dir: Path,
    folders: dict[int, Path],
    *,
    checkpoints: CheckpointSource | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The noise floor of the chain whose links are ``folders`` (step -> folder): ``([M, F] cosines, record)``.

    M is :func:`noise_floor_links`; the final link's SAE, L1 coefficient and (``carry``) optimizer state start the
    noise chain (:func:`noise_chain_cosines`), which trains on the final checkpoint's own training rows with the
    final link's token budget. The record holds M, the tokens per link, the seconds taken and the rule. When the run
    has no training rows for the final checkpoint (a chain installed from the Hub), the floor is skipped: M = 0 and
    ``record["skipped"]`` says why.
    """
    steps = sorted(folders)
    n_links = noise_floor_links(run, len(steps))
    final_step, folder = steps[-1], folders[steps[-1]]
    n_tokens = run.chain.tokens_for(len(steps) - 1)
    record: dict[str, Any] = {"rule": NOISE_FLOOR_RULE, "links": n_links, "tokens_per_link": n_tokens,
                              "step": int(final_step), "seconds": 0.0, "skipped": None}  # fmt: skip
    d_sae = run.chain.expansion_factor * run.model.d_model
    if n_links == 0:
        return np.zeros((0, d_sae)), record
    if checkpoints is None and run.cache.streamed:  # streamed: the final checkpoint's model runs again
        checkpoints = open_source(run.model, Path(run_dir))
    activations = open_activations(run, run_dir, checkpoints, device, full_model=False)  # cosines only: no eval
    try:
        if len(activations.train_head(final_step, 1)) == 0:
            raise ValueError(f"the run holds no training rows of step {final_step}")
    except (ValueError, OSError, KeyError) as error:
        record.update(links=0, skipped=f"no noise floor: {error}")
        print(f"drift stage: {record['skipped']}", flush=True)
        return np.zeros((0, d_sae)), record
    l1 = _final_l1(run, folder, activations, final_step)
    sae = load_training_sae(folder, run.chain, l1_coefficient=l1, device=device)
    state = None
    if run.chain.optimizer_policy == "carry" and (folder / OPTIMIZER_FILE).is_file():
        state = torch.load(folder / OPTIMIZER_FILE, weights_only=False)
    began = time.perf_counter()
    cosines = noise_chain_cosines(run, sae, activations, final_step, n_links, l1_coefficient=l1, n_tokens=n_tokens,
                                  optimizer_state=state, progress=progress)  # fmt: skip
    record["seconds"] = round(time.perf_counter() - began, 3)
    if progress:
        print(f"noise floor: {n_links} links of {n_tokens:,} tokens retrained on step {final_step} in "
              f"{record['seconds']:.1f} s", flush=True)  # fmt: skip
    return cosines, record


def noise_floor_numbers(
    record: dict[str, Any], steps: np.ndarray, median_cosine: np.ndarray, floor: np.ndarray
) -> dict[str, Any]:
    """The noise floor's numbers for the results JSON (Fig. 6a): ``record`` (:func:`run_noise_floor`'s) with the
    floor's median after 1 and after M links and, per checkpoint within M links of the final, the real median cosine
    to final against the floor's 5% quantile at the same distance (:func:`saetrack.analysis.drift.beyond_noise_floor`).

    ``floor`` is ``[M, 3]``: the 5%, 25% and 50% quantiles over live features after m = 1..M links.
    ``last_checkpoint_beyond_noise`` is the last step whose drift exceeds the floor (None: none does);
    ``steps_within_noise`` the compared steps whose drift does not (the floor can hold a stretch of checkpoints
    before a later one exceeds it again).
    """
    n, n_links = len(steps), len(floor)
    beyond = beyond_noise_floor(median_cosine, floor[:, 0]) if n_links else np.zeros(n, dtype=bool)
    compared = [t for t in range(n - 1) if n - 1 - t <= n_links]
    per_checkpoint = [
        {"step": int(steps[t]), "links_before_final": n - 1 - t, "median_cosine": float(median_cosine[t]),
         "floor_q05": float(floor[n - 2 - t, 0]), "beyond_noise": bool(beyond[t])}
        for t in compared
    ]  # fmt: skip
    beyond_steps = [int(steps[t]) for t in compared if beyond[t]]
    return {
        **record,
        "median_after_1_link": float(floor[0, 2]) if n_links else None,
        "median_after_all_links": float(floor[-1, 2]) if n_links else None,
        "q05_after_all_links": float(floor[-1, 0]) if n_links else None,
        "per_checkpoint": per_checkpoint,
        "checkpoints_beyond_noise": len(beyond_steps),
        "last_checkpoint_beyond_noise": max(beyond_steps) if beyond_steps else None,
        "steps_within_noise": [int(steps[t]) for t in compared if not beyond[t]],
    }


def noise_floor_config_hash(run: RunConfig) -> str:
    """Hash of what the noise floor depends on: the chain's hash (which covers the cache, its token plan with the
    floor's rows, the chain section and the seeds) and the floor's resolved link count."""
    return config_hash({"chain": chain_config_hash(run), "links": run.noise_floor_links, "v": 1})


def kept_noise_floor(
    run: RunConfig, run_dir: Path, folders: dict[int, Path], *, device: str = "cpu", progress: bool = True,
    force: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """:func:`run_noise_floor`, kept in ``run_dir/noise_floor/`` under :func:`noise_floor_config_hash`: read back when
    finished with this config (unless ``force``), else computed and written atomically, manifest last."""

    def build(stage: StageRun) -> dict[str, Any]:
        cosines, record = run_noise_floor(run, run_dir, folders, device=device, progress=progress)
        with stage.atomic() as tmp:
            np.save(tmp / COSINES_FILE, cosines.astype(np.float64), allow_pickle=False)
            return stage.finish(config={"drift": run.to_dict()["drift"]}, into=tmp, record=record)

    folder = Path(run_dir) / paths.NOISE_FLOOR_DIR
    manifest = run_stage(folder, "noise_floor", noise_floor_config_hash(run), build, force=force)
    return np.load(folder / COSINES_FILE, allow_pickle=False), manifest["record"]


def train_noise_floor(
    run: RunConfig, run_dir: Path, *, device: str = "cpu", progress: bool = True, force: bool = False
) -> dict[str, Any]:
    """The noise floor of the run's finished chain (:func:`kept_noise_floor`) as a piece of work of its own, what a
    spread job's rank runs once the chain is current; returns the floor's record."""
    folders = load_chain(run_dir, run)
    return kept_noise_floor(run, run_dir, folders, device=device, progress=progress, force=force)[1]
