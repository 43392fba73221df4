"""Sharing SAE-Track chains on the Hugging Face Hub: push a finished chain, load it back pinned and hash-checked.

* :mod:`~saetrack.hub.layout` — the Hub layout, repo-id and revision checks, errors;
* :mod:`~saetrack.hub.card` — the model card;
* :mod:`~saetrack.hub.push` — staging and pushing a chain;
* :mod:`~saetrack.hub.pull` — downloading at a pinned commit, verifying and installing a chain;
* :mod:`~saetrack.hub.crosscoder` — the run's cross-snapshot crosscoder pushed beside the chain, and loaded back.
"""

from saetrack.hub.card import model_card, sae_lens_version
from saetrack.hub.crosscoder import (
    CROSSCODER_MODEL_DIR,
    download_crosscoder,
    install_crosscoder,
    load_hub_crosscoder,
    stage_crosscoder,
    verify_crosscoder_files,
)
from saetrack.hub.layout import (
    CARD_FILE,
    COMMIT_HASH,
    CROSSCODER_FOLDER,
    HASHED_SECTIONS,
    INDEX_FILE,
    LAYOUT_VERSION,
    ChainConfigMismatchError,
    ChainIntegrityError,
    RemoteFilesExistError,
    check_commit,
    read_index,
    safe_relative,
    validate_repo_id,
)
from saetrack.hub.pull import download_chain, install_chain, load_hub_chain, run_config_of, verify_chain_files
from saetrack.hub.push import push_chain, stage_chain

__all__ = [
    "CARD_FILE",
    "COMMIT_HASH",
    "CROSSCODER_FOLDER",
    "CROSSCODER_MODEL_DIR",
    "HASHED_SECTIONS",
    "INDEX_FILE",
    "LAYOUT_VERSION",
    "ChainConfigMismatchError",
    "ChainIntegrityError",
    "RemoteFilesExistError",
    "check_commit",
    "download_chain",
    "download_crosscoder",
    "install_chain",
    "install_crosscoder",
    "load_hub_chain",
    "load_hub_crosscoder",
    "model_card",
    "push_chain",
    "read_index",
    "run_config_of",
    "sae_lens_version",
    "safe_relative",
    "stage_chain",
    "stage_crosscoder",
    "validate_repo_id",
    "verify_chain_files",
    "verify_crosscoder_files",
]
