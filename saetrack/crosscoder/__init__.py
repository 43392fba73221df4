"""The cross-snapshot crosscoder of Ge et al. (2025), the field's other method for tracking features in training.

* :mod:`~saetrack.crosscoder.model` — :class:`Crosscoder`: shared JumpReLU encoder over every snapshot, one decoder
  per snapshot, the loss with the sparsity penalty weighted by the decoder norms summed over snapshots;
* :mod:`~saetrack.crosscoder.activations` — the same tokens' activations at every snapshot, cached once;
* :mod:`~saetrack.crosscoder.training` — seeded, resumable training;
* :mod:`~saetrack.crosscoder.io` — the documented on-disk format and its loader;
* :mod:`~saetrack.crosscoder.quality` — explained variance, L0 and dead features per snapshot.
"""

from saetrack.crosscoder.io import CrosscoderFormatError, SavedCrosscoder, load_crosscoder, save_crosscoder
from saetrack.crosscoder.model import Crosscoder, CrosscoderLoss, CrosscoderShape

__all__ = [
    "Crosscoder",
    "CrosscoderFormatError",
    "CrosscoderLoss",
    "CrosscoderShape",
    "SavedCrosscoder",
    "load_crosscoder",
    "save_crosscoder",
]
