"""Checkpoint sources: "the model at training step N" from a local folder or from Hub revisions.

Every later stage gets its models through one small interface, :class:`CheckpointSource`, with two
implementations:

* :class:`LocalSuite` — a folder of ``step{N}/`` Hugging Face checkpoints (the nano suite trained here,
  or a user's own checkpoints) with the tokenizer in ``tokenizer/`` or inside the step folders;
* :class:`HubSuite` — a Hub repo with one revision per step (``EleutherAI/pythia-*-deduped``, revisions
  ``step{N}``), downloaded file by file into the Hugging Face cache and optionally pinned to commit hashes.

Any architecture of :data:`~saetrack.data.hf_convert.SUPPORTED_MODEL_TYPES` loads (GPT-NeoX, GPT-2, Llama,
Mistral, Qwen2: a user's own training run in any of these layouts; :func:`checkpoint_architecture` names a
folder's). Models are turned into ``transformer_lens.HookedTransformer`` **without weight processing** (no
LayerNorm folding, no centring, no value-bias folding), so ``blocks.{L}.hook_resid_pre`` equals the Hugging Face
model's ``hidden_states[L]`` and SAEs trained on it interoperate with plain ``transformers`` code.

Each checkpoint's weights are hashed (:func:`checkpoint_weights_sha256`) independently of file format and
sharding, so duplicated checkpoints — many published Pythia step branches serve the final weights — are
detected (:func:`warn_on_duplicates`).
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
import transformers
from tqdm import tqdm
from transformer_lens import HookedTransformer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from saetrack.config.data import ModelConfig
from saetrack.data.hf_convert import SUPPORTED_MODEL_TYPES, hooked_from_hf
from saetrack.data.integrity import (
    BIN_PATTERNS,
    SAFETENSORS_INDEX,
    SAFETENSORS_PATTERNS,
    checkpoint_weights_sha256,
    format_steps,
    warn_on_duplicates,
    weight_files,
)
from saetrack.paths import MODEL_DIR, REPO_ROOT, TOKENIZER_DIR, step_dir_name

__all__ = [
    "CONFIG_FILE",
    "TOKENIZER_PATTERNS",
    "CheckpointSource",
    "HubSuite",
    "LocalSuite",
    "checkpoint_architecture",
    "open_source",
]


#: The model config file of a Hugging Face checkpoint.
CONFIG_FILE = "config.json"
#: Tokenizer files of a Hugging Face repo.
TOKENIZER_PATTERNS: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)

#: Checkpoint folder names: ``step{N}`` (this project's suites, Pythia's revisions) or the HF Trainer's
#: ``checkpoint-{N}``.
_STEP_DIR = re.compile(r"^(?:step|checkpoint-)(\d+)$")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


def checkpoint_architecture(folder: str | Path) -> str:
    """The Hugging Face ``model_type`` of the checkpoint in ``folder`` (``"gpt_neox"``, ``"gpt2"``, ``"llama"``, ...),
    read from its ``config.json`` without loading anything (whether it is supported or not)."""
    path = Path(folder) / CONFIG_FILE
    model_type = json.loads(path.read_text()).get("model_type")
    if not model_type:
        raise ValueError(f"{path} names no model_type.")
    return str(model_type)


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


class CheckpointSource(abc.ABC):
    """The checkpoints of one training run, by training step: folders, HF models, hooked models, hashes."""

    #: Available checkpoint steps, ascending.
    steps: tuple[int, ...]

    def __init__(self, steps: Iterable[int]) -> None:
        steps = tuple(int(s) for s in steps)
        if not steps or any(s < 0 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"steps = {steps} is invalid: need at least one non-negative step, strictly ascending.")
        self.steps = steps
        self._hashes: dict[int, str] = {}
        self._tokenizer: transformers.PreTrainedTokenizerBase | None = None

    # -- to implement ---------------------------------------------------------------------------
    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance of the source for manifests (kind, location, revisions, hashes seen so far)."""

    @abc.abstractmethod
    def checkpoint_dir(self, step: int) -> Path:
        """A local folder holding the Hugging Face checkpoint of ``step`` (downloaded first if needed)."""

    @abc.abstractmethod
    def _tokenizer_dir(self) -> Path:
        """A local folder holding the tokenizer files."""

    # -- shared ---------------------------------------------------------------------------------
    def _check_step(self, step: int) -> int:
        if step not in self.steps:
            raise ValueError(
                f"step {step} is not a checkpoint of {self.name}; available steps: {format_steps(self.steps)}."
            )
        return int(step)

    @property
    def name(self) -> str:
        """A short human-readable name of the source (for messages and progress bars)."""
        return type(self).__name__

    def tokenizer(self) -> transformers.PreTrainedTokenizerBase:
        """The suite's tokenizer (loaded once, then cached)."""
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_dir()))
        return self._tokenizer

    def load_hf(
        self, step: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> transformers.PreTrainedModel:
        """The Hugging Face causal LM at ``step`` (``AutoModelForCausalLM``), in eval mode, on ``device`` in ``dtype``.

        Raises ``NotImplementedError`` naming the supported model types when the checkpoint's ``model_type`` is not
        one of :data:`~saetrack.data.hf_convert.SUPPORTED_MODEL_TYPES`, and ``RuntimeError`` if any weight of the
        model is missing from the checkpoint (it would be randomly initialised).
        """
        folder = self.checkpoint_dir(self._check_step(step))
        model_type = checkpoint_architecture(folder)  # before transformers, which may not know it at all
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise NotImplementedError(
                f"checkpoint {folder} has model_type={model_type!r}; supported model types: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        config = AutoConfig.from_pretrained(str(folder))
        model, info = AutoModelForCausalLM.from_pretrained(
            str(folder), config=config, dtype=dtype, output_loading_info=True
        )
        if info.get("missing_keys"):
            raise RuntimeError(f"checkpoint {folder} lacks weights {sorted(info['missing_keys'])}.")
        return model.to(device).eval()

    def load_hooked(
        self, step: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> HookedTransformer:
        """The checkpoint at ``step`` as an unprocessed ``HookedTransformer`` (see :func:`hooked_from_hf`)."""
        hf_model = self.load_hf(step, device="cpu", dtype=dtype)
        return hooked_from_hf(hf_model, device=device, dtype=dtype, tokenizer=self.tokenizer())

    def weights_hash(self, step: int) -> str:
        """SHA-256 of the checkpoint's stored tensors (:func:`checkpoint_weights_sha256`), cached per step."""
        step = self._check_step(step)
        if step not in self._hashes:
            self._hashes[step] = checkpoint_weights_sha256(self.checkpoint_dir(step))
        return self._hashes[step]

    def weights_hashes(self, steps: Iterable[int] | None = None, warn: bool = True) -> dict[int, str]:
        """Weight hashes of ``steps`` (default: all); warns on duplicates (:func:`warn_on_duplicates`)."""
        chosen = list(self.steps if steps is None else steps)
        hashes = {step: self.weights_hash(step) for step in tqdm(chosen, desc=f"hashing {self.name} checkpoints")}
        if warn:
            warn_on_duplicates(hashes)
        return hashes

    @property
    def known_hashes(self) -> dict[int, str]:
        """Step -> weight hash of every checkpoint hashed (or remembered) so far."""
        return dict(self._hashes)

    def remember_hashes(self, hashes: Mapping[int, str]) -> None:
        """Take weight hashes computed elsewhere for checkpoints known unchanged since (a watched run verifies each
        one before an update), so that they are not read and hashed again; steps not in this source are ignored."""
        self._hashes.update({int(s): h for s, h in hashes.items() if int(s) in self.steps})

    def _hashes_json(self) -> dict[str, str]:
        return {str(step): self._hashes[step] for step in sorted(self._hashes)}


class LocalSuite(CheckpointSource):
    """Checkpoints in ``root/step{N}/`` (Hugging Face format); the tokenizer in ``root/tokenizer/`` or a step folder.

    ``steps`` (default: every ``step{N}`` folder holding a ``config.json``) must all exist on disk.
    """

    def __init__(self, root: str | Path, steps: Iterable[int] | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"checkpoint folder {self.root} does not exist.")
        found = self.available_steps(self.root)
        if steps is None:
            if not found:
                raise ValueError(f"{self.root} holds no step{{N}}/ checkpoint folders with a {CONFIG_FILE}.")
            steps = found
        steps = tuple(steps)
        missing = [s for s in steps if s not in found]
        if missing:
            raise ValueError(
                f"steps {format_steps(missing)} have no checkpoint folder in {self.root}; "
                f"available steps: {format_steps(found)}."
            )
        super().__init__(steps)

    @staticmethod
    def available_steps(root: str | Path) -> tuple[int, ...]:
        """Steps ``N`` with a ``root/step{N}/config.json`` (or ``root/checkpoint-{N}/config.json``), ascending."""
        steps = []
        for child in Path(root).iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / CONFIG_FILE).is_file():
                steps.append(int(match.group(1)))
        return tuple(sorted(set(steps)))

    @property
    def name(self) -> str:
        return f"LocalSuite({self.root})"

    def checkpoint_dir(self, step: int) -> Path:
        """``root/step{N}``, or ``root/checkpoint-{N}`` (the HF Trainer's name) when only that exists."""
        folder = self.root / step_dir_name(self._check_step(step))
        trainer = self.root / f"checkpoint-{step}"
        return trainer if not folder.is_dir() and trainer.is_dir() else folder

    def _tokenizer_dir(self) -> Path:
        candidates = [self.root / TOKENIZER_DIR, *(self.root / step_dir_name(s) for s in self.steps)]
        for folder in candidates:
            if _has_tokenizer(folder):
                return folder
        raise FileNotFoundError(
            f"no tokenizer (tokenizer.json or tokenizer_config.json) in {self.root / TOKENIZER_DIR} "
            "or in any step folder."
        )

    def describe(self) -> dict[str, Any]:
        """``{"kind": "local", "path", "steps", "weights_sha256": {step: hash of the steps hashed so far}}``."""
        return {
            "kind": "local",
            "path": str(self.root),
            "steps": list(self.steps),
            "weights_sha256": self._hashes_json(),
        }


class HubSuite(CheckpointSource):
    """Checkpoints as revisions of a Hub repo (``revision_template.format(step=N)``), fetched into the HF cache.

    Only the config, the weights (safetensors if the revision has them, else ``.bin``) and the tokenizer files
    are downloaded, with ``huggingface_hub.snapshot_download``; with ``HF_HUB_OFFLINE=1`` the cache alone is
    used. ``revisions`` pins steps to commit hashes (downloaded by hash, immune to moved branches); the commit
    each step resolved to is recorded in :meth:`describe` and returned by :meth:`resolved_revisions`. ``token``
    is passed to the Hub and never recorded.
    """

    def __init__(
        self,
        repo_id: str,
        steps: Iterable[int],
        *,
        revision_template: str = "step{step}",
        revisions: Mapping[int, str] | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
    ) -> None:
        super().__init__(steps)
        if not repo_id or repo_id.count("/") != 1:
            raise ValueError(f"repo_id = {repo_id!r} is invalid: expected 'owner/name'.")
        if "{step}" not in revision_template:
            raise ValueError(f"revision_template = {revision_template!r} is invalid: it must contain '{{step}}'.")
        pins = {int(step): str(rev) for step, rev in (revisions or {}).items()}
        unknown = sorted(set(pins) - set(self.steps))
        if unknown:
            raise ValueError(f"revisions pin steps {unknown} that are not among the steps {format_steps(self.steps)}.")
        not_hashes = {step: rev for step, rev in pins.items() if not _COMMIT_HASH.match(rev)}
        if not_hashes:
            raise ValueError(f"revisions must be 40-hex commit hashes to pin anything; got {not_hashes}.")
        self.repo_id = repo_id
        self.revision_template = revision_template
        self.pins = pins
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._token = token
        self._dirs: dict[int, Path] = {}
        self._resolved: dict[int, str] = {}
        self._tokenizer_commit: str | None = None

    @property
    def name(self) -> str:
        return f"HubSuite({self.repo_id})"

    def revision(self, step: int) -> str:
        """The revision requested for ``step``: its pinned commit hash, else ``revision_template`` filled in."""
        step = self._check_step(step)
        return self.pins.get(step, self.revision_template.format(step=step))

    def _snapshot(self, revision: str, patterns: Sequence[str]) -> Path:
        try:
            folder = huggingface_hub.snapshot_download(
                self.repo_id,
                revision=revision,
                cache_dir=self.cache_dir,
                allow_patterns=list(patterns),
                token=self._token,
            )
        except Exception as error:
            error.add_note(f"while fetching {self.repo_id} at revision {revision!r} (cache_dir={self.cache_dir})")
            raise
        return Path(folder)

    def checkpoint_dir(self, step: int) -> Path:
        """The cached snapshot folder of ``step``'s revision, downloading config and weights if needed."""
        step = self._check_step(step)
        if step not in self._dirs:
            revision = self.revision(step)
            folder = self._snapshot(revision, (CONFIG_FILE, *SAFETENSORS_PATTERNS))
            if not any((folder / name).is_file() for name in ("model.safetensors", SAFETENSORS_INDEX)):
                folder = self._snapshot(revision, (CONFIG_FILE, *BIN_PATTERNS))
            weight_files(folder)  # raises, naming the folder, if the revision has no weights
            commit = folder.name
            if step in self.pins and commit != self.pins[step]:
                raise RuntimeError(f"step {step} was pinned to {self.pins[step]} but resolved to {commit}.")
            self._dirs[step], self._resolved[step] = folder, commit
        return self._dirs[step]

    def _tokenizer_dir(self) -> Path:
        folder = self._snapshot(self.revision(self.steps[-1]), TOKENIZER_PATTERNS)
        if not _has_tokenizer(folder):
            raise FileNotFoundError(f"{self.repo_id} at revision {self.revision(self.steps[-1])!r} has no tokenizer.")
        self._tokenizer_commit = folder.name
        return folder

    def resolved_revisions(self) -> dict[int, str]:
        """Commit hash each fetched step resolved to; pass it back as ``revisions`` to pin a later run."""
        return dict(sorted(self._resolved.items()))

    def describe(self) -> dict[str, Any]:
        """Repo, revision template, steps, pins, the commit of every step fetched so far, tokenizer commit, hashes."""
        return {
            "kind": "hub",
            "repo_id": self.repo_id,
            "revision_template": self.revision_template,
            "steps": list(self.steps),
            "pinned": {str(step): rev for step, rev in sorted(self.pins.items())},
            "resolved_commits": {str(step): sha for step, sha in self.resolved_revisions().items()},
            "tokenizer_commit": self._tokenizer_commit,
            "weights_sha256": self._hashes_json(),
        }


def open_source(
    model: ModelConfig,
    run_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    revisions: Mapping[int, str] | None = None,
    token: str | bool | None = None,
    known_hashes: Mapping[int, str] | None = None,
) -> CheckpointSource:
    """The checkpoint source a run's ``model`` section describes, over ``model.checkpoint_steps``; ``known_hashes``
    (step -> weight hash of checkpoints verified unchanged) are remembered (:meth:`CheckpointSource.remember_hashes`).

    ``"suite"``: ``LocalSuite(run_dir / "model")``; ``"local"``: ``LocalSuite(model.local_path)`` (a relative
    path is taken from the repository root, never the working directory);
    ``"hub"``: ``HubSuite(model.repo_id)`` (``cache_dir``, ``revisions`` and ``token`` apply to it only).
    """
    steps = model.checkpoint_steps
    source: CheckpointSource | None = None
    if model.source == "suite":
        source = LocalSuite(Path(run_dir) / MODEL_DIR, steps)
    elif model.source == "local":
        local_path = Path(str(model.local_path)).expanduser()
        source = LocalSuite(local_path if local_path.is_absolute() else REPO_ROOT / local_path, steps)
    elif model.source == "hub":
        source = HubSuite(str(model.repo_id), steps, revision_template=model.revision_template, revisions=revisions,
                          cache_dir=cache_dir, token=token)  # fmt: skip
    if source is None:
        raise ValueError(f"model.source = {model.source!r} is invalid: one of 'suite', 'local', 'hub'.")
    source.remember_hashes(known_hashes or {})
    return source
