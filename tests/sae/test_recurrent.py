"""Recurrent initialisation (Sec. 3.2.2): a link starts as a copy of the previous SAE with its own hyperparameters."""

from __future__ import annotations

import pytest
import torch

from saetrack.sae.model import build_sae
from saetrack.sae.recurrent import recurrent_init
from tests.sae.helpers import D_IN, chain_config, randomise_biases

pytestmark = pytest.mark.usefixtures("one_thread")


def test_init_from_copies_weights_with_new_hyperparameters() -> None:
    prev = build_sae(D_IN, chain_config(decoder_norm="weighted", l1_coefficient=1e-3), seed=0)
    randomise_biases(prev)
    nxt = recurrent_init(prev, chain_config(decoder_norm="weighted"), l1_coefficient=5e-4)
    assert nxt is not prev and nxt.cfg.l1_coefficient == 5e-4
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(nxt, name), getattr(prev, name))
        assert getattr(nxt, name).data_ptr() != getattr(prev, name).data_ptr()
    # a weighted SAE seeding a unit-norm link: norms are folded into the encoder, the function is unchanged
    unit = recurrent_init(prev, chain_config(decoder_norm="unit"))
    torch.testing.assert_close(unit.W_dec.norm(dim=1), torch.ones(unit.cfg.d_sae))
    x = torch.randn(20, D_IN)
    torch.testing.assert_close(unit(x), prev(x), rtol=1e-5, atol=1e-5)


def test_recurrent_init_takes_this_links_lambda_and_metadata() -> None:
    prev = build_sae(D_IN, chain_config(l1_coefficient=1e-3), seed=0, metadata={"model_revision": "step4"})
    nxt = recurrent_init(prev, chain_config(l1_coefficient=7e-4), metadata={"model_revision": "step8"})
    assert nxt.cfg.l1_coefficient == 7e-4  # default: the chain's own coefficient, not the previous link's
    assert nxt.cfg.metadata.model_revision == "step8" and prev.cfg.metadata.model_revision == "step4"
    assert torch.equal(nxt.W_dec, prev.W_dec)  # unit rows already: copied bit for bit
    with torch.no_grad():
        nxt.W_dec.add_(1.0)
    assert not torch.equal(nxt.W_dec, prev.W_dec)  # a copy, not a view of the previous link
