"""Fixtures of the SAE tests: synthetic activations to train on."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.sae.training import synthetic_activations
from tests.sae.helpers import D_IN


@pytest.fixture(scope="package")
def data() -> np.ndarray:
    """6000 synthetic activations of width ``D_IN`` (seeded)."""
    x, _ = synthetic_activations(6000, D_IN, seed=1)
    return x
