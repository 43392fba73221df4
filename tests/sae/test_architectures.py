"""Link architectures (TopK, BatchTopK, JumpReLU): training to their L0, recurrent init, save/load, encoding, checks."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, TopKSAE

from saetrack.analysis.metrics import reconstruction_metrics
from saetrack.config import ChainConfig, ConfigError
from saetrack.sae.architectures import (
    SAETrackBatchTopKSAE,
    SAETrackJumpReLUSAE,
    SAETrackTopKSAE,
    architecture_of,
    sparsity_coefficient,
)
from saetrack.sae.calibration import calibrate_coefficient, short_run_l0
from saetrack.sae.io import load_training_sae, save_sae
from saetrack.sae.loop import penalty_loss
from saetrack.sae.model import HyperparameterMismatchError, LinkSAE, build_sae, check_hyperparameters
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import train_sae
from saetrack.sae.weights import SAEWeights, decode, feature_activations
from tests.sae.helpers import D_IN

K = 4
BATCH = 64
STEPS = 300


def arch_chain(architecture: str, **overrides: object) -> ChainConfig:
    """A unit-norm chain section of ``architecture`` (expansion 4, k 4 for TopK/BatchTopK, coefficient 1e-2)."""
    k = K if architecture in ("topk", "batchtopk") else None
    base = ChainConfig(
        schedule=(0, 1, 2), expansion_factor=4, l1_coefficient=1e-2, decoder_norm="unit", architecture=architecture, k=k
    )  # type: ignore[arg-type]
    return dataclasses.replace(base, **overrides)


def trained(architecture: str, data: np.ndarray, **overrides: object) -> LinkSAE:
    """A seeded SAE of ``architecture`` trained for :data:`STEPS` steps on ``data``."""
    chain = arch_chain(architecture, **overrides)
    sae = build_sae(D_IN, chain, seed=0)
    train_sae(sae, data, n_tokens=STEPS * BATCH, lr=4e-3, warmup_steps=10, batch_size=BATCH, seed=0, progress=False)
    return sae


def mean_l0(sae: LinkSAE, x: np.ndarray) -> float:
    """Mean active features per token of ``sae`` on ``x`` (through the analysis view)."""
    return float((feature_activations(sae, x) > 0).float().sum(dim=1).mean())


@pytest.fixture(scope="module")
def train_rows(data: np.ndarray) -> np.ndarray:
    """The first 5000 synthetic activations: the training rows."""
    return data[:5000]


@pytest.fixture(scope="module")
def heldout(data: np.ndarray) -> np.ndarray:
    """The last 1000 synthetic activations (same dictionary, not trained on)."""
    return data[5000:]


@pytest.fixture(scope="module")
def links(train_rows: np.ndarray) -> dict[str, LinkSAE]:
    """One trained SAE per architecture (unit-norm decoder), and a weighted TopK and BatchTopK."""
    out = {arch: trained(arch, train_rows) for arch in ("topk", "batchtopk", "jumprelu")}
    out["topk_weighted"] = trained("topk", train_rows, decoder_norm="weighted")
    out["batchtopk_weighted"] = trained("batchtopk", train_rows, decoder_norm="weighted")
    return out


def test_each_architecture_is_sae_lens_own(links: dict[str, LinkSAE]) -> None:
    assert isinstance(links["topk"], SAETrackTopKSAE) and links["topk"].cfg.k == K
    assert isinstance(links["batchtopk"], SAETrackBatchTopKSAE) and links["batchtopk"].cfg.k == K
    assert isinstance(links["jumprelu"], SAETrackJumpReLUSAE)
    assert not links["topk"].cfg.rescale_acts_by_decoder_norm  # unit rows: selection on the plain pre-activations
    assert links["topk_weighted"].cfg.rescale_acts_by_decoder_norm
    for name in ("topk", "batchtopk", "jumprelu"):  # the unit-norm constraint holds after training
        torch.testing.assert_close(links[name].W_dec.norm(dim=1), torch.ones(4 * D_IN))


def test_topk_keeps_exactly_k(links: dict[str, LinkSAE], heldout: np.ndarray) -> None:
    for name in ("topk", "topk_weighted"):
        active = (feature_activations(links[name], heldout) > 0).sum(dim=1)
        assert int(active.max()) <= K
        assert mean_l0(links[name], heldout) == pytest.approx(K, abs=0.01)


def test_batchtopk_reaches_k_on_average(links: dict[str, LinkSAE], data: np.ndarray, heldout: np.ndarray) -> None:
    sae = links["batchtopk"]
    assert float(sae.topk_threshold) > 0  # the running threshold was learned
    assert mean_l0(sae, heldout) == pytest.approx(K, rel=0.25)  # inference: the threshold, not a batch top-k
    sae.train()
    with torch.no_grad():  # training: exactly k * batch activations per batch
        acts = sae.encode(torch.as_tensor(data[:BATCH]))
    sae.eval()
    assert int((acts > 0).sum()) <= K * BATCH


def test_jumprelu_calibrates_its_l0_coefficient(train_rows: np.ndarray, heldout: np.ndarray) -> None:
    chain = arch_chain("jumprelu", lr_first=4e-3, batch_size=BATCH)  # a learning rate that moves thresholds in time
    l0_at = short_run_l0(train_rows, heldout, chain, lambda c: c, n_tokens=150 * BATCH, seed=0)
    found = calibrate_coefficient(l0_at, 6.0, start=1e-2, tolerance=0.2)
    assert found.l0 == pytest.approx(6.0, rel=0.2) and len(found.runs) > 1  # searched, and reached
    assert l0_at(found.coefficient) == found.l0  # deterministic
    runs = sorted(found.runs)
    assert all(a[1] > b[1] for a, b in itertools.pairwise(runs))  # a larger L0 penalty, fewer features


def test_topk_calibration_is_k_without_training(data: np.ndarray, heldout: np.ndarray) -> None:
    chain = arch_chain("batchtopk", k=None, target_l0=5.2)
    assert chain.topk_k == 5 and not chain.searches_coefficient
    l0_at = short_run_l0(data, heldout, chain, lambda c: c, n_tokens=10**9, seed=0)  # would take long if it trained
    assert l0_at(1.0) == l0_at(1e-6) == 5.0


def test_jumprelu_thresholds_stay_non_negative(links: dict[str, LinkSAE]) -> None:
    threshold = links["jumprelu"].threshold
    assert float(threshold.min()) >= 0 and float(threshold.std()) > 0  # learned, per feature
    assert sparsity_coefficient(links["jumprelu"]) == 1e-2 == links["jumprelu"].cfg.l0_coefficient


@pytest.mark.parametrize("name", ["topk", "batchtopk", "jumprelu", "topk_weighted", "batchtopk_weighted"])
def test_recurrent_init_copies_every_parameter_and_buffer(links: dict[str, LinkSAE], name: str) -> None:
    previous = links[name]
    chain = arch_chain(previous.cfg.architecture(), decoder_norm=previous.cfg.decoder_norm)
    sae = recurrent_init(previous, chain, l1_coefficient=3e-2, metadata={"model_revision": "step2"})
    assert type(sae) is type(previous) and sae is not previous
    before, after = previous.state_dict(), sae.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert sae.cfg.metadata.model_revision == "step2" and sparsity_coefficient(sae) == 3e-2


def test_weighted_to_unit_folds_norms_and_keeps_the_function(links: dict[str, LinkSAE], heldout: np.ndarray) -> None:
    previous = links["batchtopk_weighted"]
    assert previous.cfg.rescale_acts_by_decoder_norm
    with torch.no_grad():
        previous.W_dec.mul_(torch.linspace(0.5, 2.0, previous.cfg.d_sae)[:, None])  # rows of different norms
    try:
        sae = recurrent_init(previous, arch_chain("batchtopk", decoder_norm="unit"))
        assert not sae.cfg.rescale_acts_by_decoder_norm
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(previous.cfg.d_sae))
        x = torch.as_tensor(heldout)
        recon_before = decode(previous, feature_activations(previous, x))
        torch.testing.assert_close(decode(sae, feature_activations(sae, x)), recon_before, rtol=1e-4, atol=1e-4)
    finally:
        with torch.no_grad():
            previous.W_dec.div_(torch.linspace(0.5, 2.0, previous.cfg.d_sae)[:, None])


@pytest.mark.parametrize("name", ["topk", "batchtopk", "jumprelu", "topk_weighted"])
def test_save_and_load_give_identical_features(
    links: dict[str, LinkSAE], heldout: np.ndarray, tmp_path: Path, name: str
) -> None:
    sae = links[name]
    architecture = sae.cfg.architecture()
    save_sae(sae, tmp_path / "link")
    expected = feature_activations(sae, heldout)
    assert torch.equal(feature_activations(tmp_path / "link", heldout), expected)
    chain = arch_chain(architecture, decoder_norm=sae.cfg.decoder_norm)
    loaded = load_training_sae(tmp_path / "link", chain, l1_coefficient=1e-2)
    assert type(loaded) is type(sae) and architecture_of(loaded) == architecture
    assert torch.equal(feature_activations(loaded, heldout), expected)
    inference = SAE.load_from_disk(tmp_path / "link")  # SAELens' own reader
    assert isinstance(inference, TopKSAE if architecture == "topk" else JumpReLUSAE)
    with torch.no_grad():
        assert torch.equal(inference.encode(torch.as_tensor(heldout)), expected)
        recon = inference.decode(expected)
    torch.testing.assert_close(decode(tmp_path / "link", expected), recon)
    if architecture == "batchtopk":  # saved as SAELens saves it: a JumpReLU SAE with the running threshold
        assert SAEWeights.load(tmp_path / "link").architecture == "jumprelu"
        assert float(loaded.topk_threshold) == float(sae.topk_threshold.float())


def test_metrics_use_the_architectures_encoding(links: dict[str, LinkSAE], heldout: np.ndarray) -> None:
    for name in ("topk", "batchtopk", "jumprelu"):
        metrics = reconstruction_metrics(links[name], heldout, batch_size=100)
        assert metrics["l0"] == pytest.approx(mean_l0(links[name], heldout), rel=1e-6)
        assert metrics["explained_variance"] > 0.5
    assert reconstruction_metrics(links["topk"], heldout)["l0"] == pytest.approx(K, abs=0.01)


def test_hyperparameter_checks_name_what_differs(links: dict[str, LinkSAE]) -> None:
    with pytest.raises(HyperparameterMismatchError, match=r"k = 4, expected 8"):
        check_hyperparameters(links["topk"], arch_chain("topk", k=8))
    with pytest.raises(HyperparameterMismatchError, match=r"l0_coefficient = 0\.01, expected 0\.5"):
        check_hyperparameters(links["jumprelu"], arch_chain("jumprelu"), l1_coefficient=0.5)
    with pytest.raises(HyperparameterMismatchError, match=r"jumprelu_bandwidth = 0\.05, expected 0\.1"):
        check_hyperparameters(links["jumprelu"], arch_chain("jumprelu", jumprelu_bandwidth=0.1))
    with pytest.raises(HyperparameterMismatchError, match=r"architecture = 'topk', expected 'batchtopk'"):
        check_hyperparameters(links["topk"], arch_chain("batchtopk"))
    with pytest.raises(ConfigError, match=r"previous SAE architecture = 'jumprelu' is invalid: need 'topk'"):
        recurrent_init(links["jumprelu"], arch_chain("topk"))
    with pytest.raises(ConfigError, match=r"k = 65 is invalid"):
        build_sae(D_IN, arch_chain("topk", k=65), seed=0)  # more than d_sae = 64


def test_penalty_loss_is_the_l1_term_or_the_other_terms() -> None:
    mse, l1, aux = torch.tensor(1.0), torch.tensor(0.25), torch.tensor(0.5)
    assert penalty_loss({"mse_loss": mse, "l1_loss": l1}, mse + l1) is l1
    assert float(penalty_loss({"mse_loss": mse, "l0_loss": aux, "pre_act_loss": l1}, mse)) == 0.75
    assert float(penalty_loss({"mse_loss": mse}, mse)) == 0.0
