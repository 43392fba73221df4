"""The nano-Pythia suite: a small GPT-NeoX trained from scratch on the corpus, saved on a Pythia-like schedule.

The model has Pythia's architecture (``transformers.GPTNeoXForCausalLM``: parallel attention + MLP residual,
LayerNorm, gelu, partial rotary embeddings, untied embeddings, no dropout) at the size of
:class:`saetrack.config.SuiteConfig`. :func:`train_suite` trains it with AdamW (betas 0.9/0.95 as Pythia),
linear warm-up then cosine decay, gradient clipping at 1.0, and saves ``run_dir/model/step{N}/`` in Hugging
Face format at exactly ``suite.checkpoint_steps`` (step N = weights after N optimizer updates, step 0 = the
initialisation). Training is resumable: the optimizer, scheduler and loss history are saved with every
checkpoint, batches are drawn from a generator seeded by ``(seed, step)``, and a run killed after any
checkpoint ends, once restarted, with weights bit-identical to an uninterrupted run (same device and thread
count).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.data.corpus import TRAIN_TOKENS, corpus_config_hash, load_corpus
from saetrack.data.nanolm import (
    GRAD_CLIP,
    adamw_optimizer,
    build_model,
    draw_batch,
    eval_contexts,
    evaluate_loss,
    lm_loss,
    lr_scheduler,
    microbatches,
)
from saetrack.data.tokens import EOT_TOKEN
from saetrack.pipeline.skeleton import StageRun, run_stage
from saetrack.runtime import keep_freed_memory, torch_threads

__all__ = [
    "RESUME_FILE",
    "TRAIN_LOSS_WINDOW",
    "WEIGHTS_FILE",
    "SuiteTrainer",
    "microbatch_backward",
    "suite_config_hash",
    "train_suite",
]


log = logging.getLogger(__name__)

#: Resume state of an unfinished training run (only the latest checkpoint's), inside ``run_dir/model/``.
RESUME_FILE = "_resume.pt"
#: Weights file written by ``save_pretrained`` in each ``step{N}/`` folder.
WEIGHTS_FILE = "model.safetensors"
#: A checkpoint's train loss is the mean minibatch loss of at most this many steps before it.
TRAIN_LOSS_WINDOW = 50

_STEP_DIR = re.compile(r"step\d+")


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _model_dir(run_dir: Path) -> Path:
    return Path(run_dir) / paths.MODEL_DIR


def _clear_model_dir(folder: Path) -> None:
    """Remove checkpoints, resume state and manifest of an earlier run with another config (fresh start)."""
    if not folder.exists():
        return
    stale = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    for name in (RESUME_FILE, paths.MANIFEST):
        if (folder / name).exists():
            stale.append(folder / name)
    if stale:
        log.warning("model: removing %d stale entries of an earlier run in %s", len(stale), folder)
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _load_resume(folder: Path, digest: str, corpus_digest: str) -> dict[str, Any] | None:
    """The saved resume state if it belongs to this config and corpus, else ``None``."""
    path = folder / RESUME_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file means starting over, not crashing
        log.warning("model: cannot read %s (%s); starting from scratch", path, error)
        return None
    if state.get("config_hash") != digest or state.get("corpus_sha256") != corpus_digest:
        return None
    return state


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (one "Writing model shards" bar per save) for a moment."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _save_checkpoint(model: Any, folder: Path, step: int) -> str:
    """Write ``folder/step{step}/`` atomically in Hugging Face format; return the weights' SHA-256."""
    target = folder / paths.step_dir_name(step)
    with store.atomic_dir(target) as tmp, _quiet_transformers():
        model.save_pretrained(str(tmp))
        digest = store.file_sha256(tmp / WEIGHTS_FILE)
    return digest


def _copy_tokenizer(run_dir: Path, folder: Path) -> None:
    source = Path(run_dir) / paths.CORPUS_DIR / paths.TOKENIZER_DIR
    with store.atomic_dir(folder / paths.TOKENIZER_DIR) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def train_suite(
    run: RunConfig,
    run_dir: Path,
    progress: bool = True,
    *,
    device: str = "cpu",
    threads: int | None = None,
    on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the nano suite and write ``run_dir/model/`` (``step{N}/`` checkpoints, tokenizer, manifest).

    Needs the corpus stage (:func:`saetrack.corpus.prepare_corpus`) to be finished. Skipped when the model
    manifest matches ``run.section_hash("corpus", "suite")``; resumed from the last checkpoint when an
    unfinished run of the same config left ``model/_resume.pt``. ``threads`` sets ``torch.set_num_threads``
    for the duration of the call (bit-identical resumption needs the same thread count and device);
    ``on_checkpoint(step, record)`` is called after each checkpoint and its resume state are on disk.
    Returns the manifest (per-checkpoint losses and weight hashes, final held-out loss, unigram entropy,
    tokens/s, timings).
    """
    suite = run.suite
    if suite is None or run.corpus is None:
        raise ValueError(f"run {run.preset!r} has no suite/corpus section (model.source = {run.model.source!r}).")
    keep_freed_memory()
    with torch_threads(threads):
        return run_stage(
            _model_dir(Path(run_dir)),
            "suite",
            suite_config_hash(run),
            lambda stage: _train_suite(run, Path(run_dir), stage, progress, device, on_checkpoint),
        )


def microbatch_backward(
    batch: torch.Tensor, n_micro: int, loss_fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Backpropagate the batch's mean loss as a sum over ``n_micro`` equal micro-batches; return it, detached.

    Each micro-batch ``part`` contributes ``loss_fn(part) / n_micro`` (:func:`~saetrack.data.nanolm.microbatches`:
    bounded logits buffers). The sum is accumulated in float32 on the device of the losses (a CUDA loss stays on the
    GPU, no host copy per micro-batch), in micro-batch order.
    """
    loss: torch.Tensor | None = None
    for part in batch.chunk(n_micro):
        part_loss = loss_fn(part) / n_micro
        part_loss.backward()
        if loss is None:
            loss = torch.zeros((), device=part_loss.device)
        loss += part_loss.detach()
    if loss is None:
        raise ValueError(f"the batch of shape {tuple(batch.shape)} has no micro-batch to train on.")
    return loss


class SuiteTrainer:
    """The state of one training session: model, optimizer, scheduler, loss history and saved checkpoints."""

    def __init__(self, run: RunConfig, run_dir: Path, device: str, digest: str, corpus_manifest: dict[str, Any]):
        assert run.suite is not None
        self.run, self.suite, self.device, self.digest = run, run.suite, device, digest
        self.folder = _model_dir(run_dir)
        self.corpus_manifest = corpus_manifest
        self.corpus_digest = corpus_manifest["files"][TRAIN_TOKENS]
        tokenizer, self.train_tokens, heldout_tokens = load_corpus(run_dir)
        self.eval_tokens = eval_contexts(heldout_tokens, self.suite)
        eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
        self.model = build_model(self.suite, len(tokenizer), run.seed, eot).to(device)
        self.n_micro = microbatches(self.suite.batch_size, self.suite.context_length, len(tokenizer))
        self.optimizer = adamw_optimizer(self.model, self.suite)
        self.scheduler = lr_scheduler(self.optimizer, self.suite)
        self.step, self.history, self.records = 0, [], []
        self.timings = {"train": 0.0, "eval": 0.0, "save": 0.0}
        self.steps_this_session = 0

    def restore_or_clear(self) -> None:
        """Continue from the saved resume state of this config and corpus, or clear the folder for a fresh start."""
        state = _load_resume(self.folder, self.digest, self.corpus_digest)
        if state is None:
            _clear_model_dir(self.folder)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history, self.records = state["step"], list(state["loss_history"]), list(state["checkpoints"])
        log.info("model: resuming from step %d", self.step)

    def batch(self, step: int) -> torch.Tensor:
        """The training batch of update ``step + 1`` on the training device."""
        tokens = draw_batch(self.train_tokens, self.run.seed, step, self.suite.batch_size, self.suite.context_length)
        return torch.as_tensor(tokens, device=self.device)

    def train_step(self) -> float:
        """One optimizer update (forward, backward, clip, AdamW, schedule); returns the minibatch loss."""
        t0 = time.perf_counter()
        batch = self.batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = microbatch_backward(batch, self.n_micro, lambda part: lm_loss(self.model, part))
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.steps_this_session += 1
        self.history.append(float(loss.detach()))
        self.timings["train"] += time.perf_counter() - t0
        return self.history[-1]

    def recent_train_loss(self) -> float:
        """Mean minibatch loss since the previous checkpoint (at most :data:`TRAIN_LOSS_WINDOW` steps).

        At step 0 there is no update yet: the loss of the initial model on the first batch.
        """
        if self.step == 0:
            with torch.no_grad():
                return float(lm_loss(self.model, self.batch(0)))
        previous = self.records[-1]["step"] if self.records else 0
        return float(np.mean(self.history[-min(TRAIN_LOSS_WINDOW, self.step - previous) :]))

    def checkpoint(self) -> dict[str, Any]:
        """Evaluate, save ``step{N}/`` and then the resume state (both atomic); return the checkpoint's record."""
        t0 = time.perf_counter()
        record = {
            "step": self.step,
            "tokens_seen": self.step * self.suite.tokens_per_step,
            "next_lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.recent_train_loss(),
            "heldout_loss": evaluate_loss(self.model, self.eval_tokens, self.suite.batch_size, self.device),
        }
        t1 = time.perf_counter()
        record["sha256"] = _save_checkpoint(self.model, self.folder, self.step)
        self.records.append(record)
        resume = {
            "config_hash": self.digest,
            "corpus_sha256": self.corpus_digest,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss_history": self.history,
            "checkpoints": self.records,
        }
        with store.atomic_path(self.folder / RESUME_FILE) as tmp:
            torch.save(resume, tmp)
        self.timings["eval"] += t1 - t0
        self.timings["save"] += time.perf_counter() - t1
        return record


def _train_suite(
    run: RunConfig,
    run_dir: Path,
    stage: StageRun,
    progress: bool,
    device: str,
    on_checkpoint: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Body of :func:`train_suite` (thread count already set, suite not current)."""
    suite = run.suite
    assert suite is not None
    folder, digest = stage.folder, stage.config_hash
    corpus_manifest = store.read_manifest(Path(run_dir) / paths.CORPUS_DIR)
    if corpus_manifest is None or corpus_manifest.get("config_hash") != corpus_config_hash(run):
        where = Path(run_dir) / paths.CORPUS_DIR
        raise store.StaleArtifactError(
            f"{where} holds no corpus for this config; run prepare_corpus(run, run_dir) first."
        )

    trainer = SuiteTrainer(run, run_dir, device, digest, corpus_manifest)
    trainer.restore_or_clear()
    folder.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer(run_dir, folder)
    checkpoints = set(suite.checkpoint_steps)

    def save() -> None:
        record = trainer.checkpoint()
        message = (
            f"step {record['step']:>6d}  next lr {record['next_lr']:.2e}  train loss {record['train_loss']:.4f}  "
            f"held-out loss {record['heldout_loss']:.4f}"
        )
        if progress:
            tqdm.write(message)
        else:
            log.info(message)
        if on_checkpoint is not None:
            on_checkpoint(record["step"], record)

    if not trainer.records:
        save()  # step 0: the initialisation
    desc = f"train {run.preset} suite"
    with tqdm(total=suite.total_steps, initial=trainer.step, desc=desc, disable=not progress) as bar:
        while trainer.step < suite.total_steps:
            loss = trainer.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if trainer.step in checkpoints:
                save()

    manifest = _write_manifest(trainer, stage)
    (folder / RESUME_FILE).unlink(missing_ok=True)
    return manifest


def _write_manifest(trainer: SuiteTrainer, stage: StageRun) -> dict[str, Any]:
    """Write and return the suite manifest (stage "suite") of a finished training run."""
    run, suite, folder, records = trainer.run, trainer.suite, trainer.folder, trainer.records
    saved = [r["step"] for r in records]
    if saved != list(suite.checkpoint_steps):
        raise RuntimeError(f"model: saved checkpoints {saved} differ from the schedule {suite.checkpoint_steps}.")
    files = {f"{paths.step_dir_name(r['step'])}/{WEIGHTS_FILE}": r["sha256"] for r in records}
    for path in sorted((folder / paths.TOKENIZER_DIR).iterdir()):
        files[f"{paths.TOKENIZER_DIR}/{path.name}"] = store.file_sha256(path)
    duplicates = len(records) - len({r["sha256"] for r in records})
    if duplicates:
        log.warning("model: %d checkpoints have the same weights as another checkpoint", duplicates)
    config = run.to_dict()
    timings = trainer.timings
    return stage.finish(
        config={"corpus": config["corpus"], "suite": config["suite"]},
        files=files,
        timings=timings,
        checkpoint_steps=saved,
        checkpoints=records,
        final_heldout_loss=records[-1]["heldout_loss"],
        heldout_unigram_entropy=trainer.corpus_manifest["heldout_unigram_entropy"],
        train_loss_history=[round(x, 5) for x in trainer.history],
        tokens_per_s=trainer.steps_this_session * suite.tokens_per_step / max(timings["train"], 1e-9),
        steps_this_session=trainer.steps_this_session,
        n_parameters=sum(p.numel() for p in trainer.model.parameters()),
        vocab_size=trainer.corpus_manifest["vocab_size"],
        device=trainer.device,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
    )


# ----------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------


def suite_config_hash(run: RunConfig) -> str:
    """Hash the model suite's manifest carries: the corpus and suite sections (and the seed)."""
    return run.section_hash("corpus", "suite")
