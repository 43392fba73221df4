"""SAELens' on-disk format: saving atomically, loading for inference, reloading for training with a link's own L1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAE, TrainingSAE
from safetensors.torch import load_file

from saetrack.config import ConfigError
from saetrack.sae.io import (
    SAE_CFG_FILE,
    SAE_SPARSITY_FILE,
    SAE_WEIGHTS_FILE,
    load_firing_frequency,
    load_training_sae,
    save_sae,
)
from saetrack.sae.model import HyperparameterMismatchError, build_sae, check_hyperparameters
from saetrack.sae.training import train_sae
from saetrack.sae.weights import feature_activations
from saetrack.store import file_sha256
from tests.sae.helpers import D_IN, chain_config, randomise_biases

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saved_sae_loads_in_sae_lens_with_same_encoding(tmp_path, apply_b_dec: bool) -> None:
    sae = build_sae(D_IN, chain_config(apply_b_dec_to_input=apply_b_dec), seed=0, metadata={"hook_name": "blocks.1.x"})
    randomise_biases(sae)
    hashes = save_sae(sae, tmp_path / "link", feature_sparsity=np.full(sae.cfg.d_sae, 0.01))
    assert set(hashes) == {SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAE_SPARSITY_FILE}
    loaded = SAE.load_from_disk(tmp_path / "link")
    assert isinstance(loaded, StandardSAE) and loaded.cfg.metadata.hook_name == "blocks.1.x"
    x = torch.randn(50, D_IN) * 2
    ours = torch.relu((x - float(apply_b_dec) * sae.b_dec) @ sae.W_enc + sae.b_enc).detach()  # Eq. 2
    torch.testing.assert_close(feature_activations(sae, x), ours, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode(x), ours, rtol=0, atol=0)
    torch.testing.assert_close(feature_activations(tmp_path / "link", x), ours, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(ours), ours @ sae.W_dec.detach() + sae.b_dec.detach())


def test_save_sae_replaces_existing_folder_atomically(tmp_path) -> None:
    folder = tmp_path / "link"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    save_sae(build_sae(D_IN, chain_config(), seed=0), folder)
    assert sorted(p.name for p in folder.iterdir()) == [SAE_CFG_FILE, SAE_WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sae_lens_reload_trap_exists_and_is_guarded(tmp_path) -> None:
    """sae_lens 6.54: an SAE saved for inference reloads as a training SAE with l1_coefficient = 1.0."""
    chain = chain_config(l1_coefficient=8e-5)
    sae = build_sae(D_IN, chain, seed=0)
    sae.save_inference_model(tmp_path / "inference")  # what SAELens' runner writes at the end of training
    trapped = TrainingSAE.load_from_disk(tmp_path / "inference")
    assert trapped.cfg.l1_coefficient == 1.0  # the trap
    with pytest.raises(HyperparameterMismatchError, match="l1_coefficient"):
        check_hyperparameters(trapped, chain)
    reloaded = load_training_sae(tmp_path / "inference", chain)
    assert reloaded.cfg.l1_coefficient == 8e-5
    assert torch.equal(reloaded.W_dec, sae.W_dec) and torch.equal(reloaded.W_enc, sae.W_enc)
    # a link's own coefficient wins over the one saved with the previous link
    save_sae(sae, tmp_path / "full")
    assert load_training_sae(tmp_path / "full", chain, l1_coefficient=2e-4).cfg.l1_coefficient == 2e-4


def test_load_training_sae_rejects_incompatible_chain(tmp_path) -> None:
    save_sae(build_sae(D_IN, chain_config(), seed=0), tmp_path / "link")
    with pytest.raises(ConfigError, match="expansion_factor"):
        load_training_sae(tmp_path / "link", chain_config(expansion_factor=8))
    with pytest.raises(ConfigError, match="apply_b_dec_to_input"):
        load_training_sae(tmp_path / "link", chain_config(apply_b_dec_to_input=False))
    with pytest.raises(FileNotFoundError, match="holds no SAELens SAE"):
        load_training_sae(tmp_path / "missing", chain_config())


def test_trained_link_saves_and_resumes(tmp_path, data: np.ndarray) -> None:
    chain = chain_config()
    result = train_sae(build_sae(D_IN, chain, seed=0), data, n_tokens=1024, lr=1e-3, warmup_steps=0, batch_size=256,
                       seed=0, progress=False)  # fmt: skip
    save_sae(result.sae, tmp_path / "step0", feature_sparsity=result.feature_frequency)
    resumed = load_training_sae(tmp_path / "step0", chain, l1_coefficient=1e-3)
    assert torch.equal(resumed.W_dec, result.sae.W_dec) and resumed.cfg.l1_coefficient == 1e-3
    inference = SAE.load_from_disk(tmp_path / "step0")
    x = torch.from_numpy(data[:100])
    torch.testing.assert_close(inference.encode(x), feature_activations(result.sae, x), rtol=0, atol=0)


def test_save_returns_file_hashes_and_log10_sparsity(tmp_path) -> None:
    sae = build_sae(D_IN, chain_config(), seed=0)
    freq = np.linspace(0.0, 1.0, sae.cfg.d_sae)
    hashes = save_sae(sae, tmp_path / "link", feature_sparsity=freq)
    assert hashes == {name: file_sha256(tmp_path / "link" / name) for name in sorted(hashes)}
    sparsity = load_file(tmp_path / "link" / SAE_SPARSITY_FILE)["sparsity"]
    torch.testing.assert_close(sparsity, torch.log10(torch.as_tensor(freq, dtype=torch.float32) + 1e-10))
    cfg = json.loads((tmp_path / "link" / SAE_CFG_FILE).read_text())
    assert cfg["l1_coefficient"] == 3e-3 and cfg["decoder_norm"] == "unit"  # the training config is saved
    with pytest.raises(ValueError, match=r"feature_sparsity has shape \(3,\)"):
        save_sae(sae, tmp_path / "bad", feature_sparsity=np.ones(3))
    assert not (tmp_path / "bad").exists()
    np.testing.assert_allclose(load_firing_frequency(tmp_path / "link"), freq, rtol=1e-5, atol=1e-9)  # read back
    save_sae(sae, tmp_path / "no_sparsity")
    assert load_firing_frequency(tmp_path / "no_sparsity") is None
