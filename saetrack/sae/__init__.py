"""The SAE of SAE-Track (Sec. 3.1): a SAELens standard SAE with the paper's decoder-norm choice, trained fast.

* :mod:`~saetrack.sae.model` — :class:`SAETrackSAE` (Eq. 1-5), :func:`build_sae`, hyperparameter checks;
* :mod:`~saetrack.sae.architectures` — the other link architectures (``ChainConfig.architecture``): SAELens' TopK,
  BatchTopK and JumpReLU training SAEs as chain links;
* :mod:`~saetrack.sae.unit_norm` — the unit-norm decoder constraint of Eq. 5, in one place;
* :mod:`~saetrack.sae.step` — the fused training step (the fast path of Eq. 3's losses and gradients);
* :mod:`~saetrack.sae.training` — :func:`train_sae` on an array of activations with SAELens' trainer;
* :mod:`~saetrack.sae.recurrent` — recurrent initialisation (Sec. 3.2.2);
* :mod:`~saetrack.sae.io` — SAELens' on-disk format, saving and reloading with a link's own hyperparameters;
* :mod:`~saetrack.sae.weights` — the analysis view: feature activations and decoder directions.
"""

from saetrack.sae.io import SAE_CFG_FILE, SAE_SPARSITY_FILE, SAE_WEIGHTS_FILE, load_training_sae, save_sae
from saetrack.sae.model import (
    HyperparameterMismatchError,
    LinkSAE,
    SAETrackSAE,
    SAETrackSAEConfig,
    build_sae,
    check_hyperparameters,
    with_link_hyperparameters,
)
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import NonFiniteLossError, TrainResult, shuffled_batches, train_sae
from saetrack.sae.weights import SAEWeights, decode, decoder_directions, feature_activations

__all__ = [
    "SAE_CFG_FILE",
    "SAE_SPARSITY_FILE",
    "SAE_WEIGHTS_FILE",
    "HyperparameterMismatchError",
    "LinkSAE",
    "NonFiniteLossError",
    "SAETrackSAE",
    "SAETrackSAEConfig",
    "SAEWeights",
    "TrainResult",
    "build_sae",
    "check_hyperparameters",
    "decode",
    "decoder_directions",
    "feature_activations",
    "load_training_sae",
    "recurrent_init",
    "save_sae",
    "shuffled_batches",
    "train_sae",
    "with_link_hyperparameters",
]
