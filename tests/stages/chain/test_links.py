"""One SAE of the chain: its seed, its L1 coefficient, its curve and metadata, and the guard on its token budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from saetrack.config import RunConfig, get_preset
from saetrack.data.activations import ActivationCache
from saetrack.data.checkpoints import open_source
from saetrack.sae.model import build_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.stages.chain.links import (
    ACTIVATION_SCALE_ROWS,
    OPTIMIZER_FILE,
    ChainTrainingError,
    activation_scale,
    evaluate_link,
    link_l1_coefficient,
    link_seed,
    sae_metadata,
    save_link,
    subsample_curve,
    train_and_evaluate_link,
    train_from_scratch,
    train_link,
)


def test_l1_scaling_rule_on_known_values(run) -> None:
    x = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 4.0], [0.0, -4.0]])  # centred norms 3, 3, 4, 4
    assert activation_scale(x) == pytest.approx(3.5)
    scaled = run.with_overrides({"chain.l1_coefficient": 0.5, "chain.l1_scale": "activation_norm"})
    assert link_l1_coefficient(scaled, scale=2.0, d_model=4) == pytest.approx(4.0)
    plain = run.with_overrides({"chain.l1_coefficient": 0.5, "chain.l1_scale": "none"})
    assert link_l1_coefficient(plain, scale=2.0, d_model=4) == pytest.approx(0.5)


def test_link_seed_is_deterministic_and_distinct_per_kind_and_position(run) -> None:
    seeds = {(kind, p): link_seed(run, kind, p) for kind in ("chain", "baseline", "probe") for p in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # every SAE its own seed
    assert all(link_seed(run, kind, p) == seed for (kind, p), seed in seeds.items())
    expected = int(np.random.SeedSequence([run.seed, 1, 3]).generate_state(1)[0])
    assert seeds[("baseline", 3)] == expected
    assert link_seed(run.with_overrides({"seed": 1}), "chain", 0) != seeds[("chain", 0)]
    with pytest.raises(KeyError):
        link_seed(run, "teacher", 0)


def test_activation_scale_centres_and_reads_only_the_first_rows() -> None:
    x = np.array([[3.0, 10.0], [-3.0, 10.0], [0.0, 14.0], [0.0, 6.0]])  # mean (0, 10): centred norms 3, 3, 4, 4
    assert activation_scale(x) == pytest.approx(3.5)
    assert activation_scale(x, n_rows=2) == pytest.approx(3.0)  # rows 0-1 around their own mean (0, 10)
    assert activation_scale(x.astype(np.float16) + 100) == pytest.approx(3.5)  # a shift changes nothing
    assert activation_scale(np.ones((5, 3))) == 0.0


def test_subsample_curve_keeps_endpoints_and_short_curves() -> None:
    curve = {"tokens": list(range(0, 1000, 10)), "loss": [float(i) for i in range(100)]}
    assert subsample_curve(curve, n=100) is curve
    short = subsample_curve(curve, n=5)
    assert short["tokens"] == [0, 250, 500, 740, 990]  # indices 0, 25, 50 (49.5 rounds to even), 74, 99
    assert short["loss"] == [0.0, 25.0, 50.0, 74.0, 99.0]


def test_sae_metadata_names_the_links_own_checkpoint(run) -> None:
    meta = sae_metadata(run, 16)
    assert meta == {
        "hook_name": "blocks.1.hook_resid_pre",
        "model_name": "saetrack-smoke",
        "context_size": 32,
        "dataset_path": "stdlib",
        "model_revision": "step16",
        "prepend_bos": False,
    }
    model = {"source": "hub", "repo_id": "org/m", "checkpoint_steps": list(range(8))}
    hub = RunConfig.from_dict({**run.to_dict(), "preset": "mine", "suite": None, "corpus": None, "model": model})
    assert sae_metadata(hub, 3)["model_name"] == "org/m" and sae_metadata(hub, 3)["dataset_path"] == ""


def test_a_link_with_too_few_cached_tokens_is_refused(smoke_run_dir) -> None:
    run = get_preset("smoke")
    cache = ActivationCache(smoke_run_dir, run)
    step = run.sae_steps[1]
    held = len(cache.train(step))
    sae = build_sae(cache.d_model, run.chain, seed=0)
    with pytest.raises(ChainTrainingError, match=rf"link 2/8 \(step {step}\): rows \[0, {held + 1}\).*holds {held}"):
        train_link(run, sae, cache, step, n_tokens=held + 1, lr=1e-3, warmup=0, seed=0,
                   optimizer_state=None, desc=f"link 2/8 (step {step})", progress=False)  # fmt: skip


def test_from_scratch_sae_is_a_seeded_build_trained_like_the_first_sae(smoke_run_dir) -> None:
    run = get_preset("smoke").with_overrides({"chain.first_tokens": 4096})
    cache = ActivationCache(smoke_run_dir, get_preset("smoke"))
    step = run.sae_steps[-1]
    result = train_from_scratch(run, cache, step, l1_coefficient=2e-3, seed=7, device="cpu", desc="b", progress=False)
    by_hand = train_link(
        run,
        build_sae(cache.d_model, dataclasses.replace(run.chain, l1_coefficient=2e-3), seed=7,
                  metadata=sae_metadata(run, step)),
        cache, step, n_tokens=run.chain.baseline_token_budget, lr=run.chain.lr_first,
        warmup=run.chain.warmup_steps_first, seed=7, optimizer_state=None, desc="b", progress=False,
    )  # fmt: skip
    assert result.n_tokens == run.chain.baseline_token_budget == 4096
    np.testing.assert_array_equal(result.sae.W_dec.detach().numpy(), by_hand.sae.W_dec.detach().numpy())


def test_train_and_evaluate_link_is_recurrent_initialisation_then_the_links_budget(smoke_run_dir, tmp_path) -> None:
    run = get_preset("smoke").with_overrides({"chain.first_tokens": 4096})
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(run.model, smoke_run_dir)
    first = train_and_evaluate_link(run, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    assert first.result.n_tokens == 4096 and first.result.loss_curve["lr"][-1] == run.chain.lr_first
    second = train_and_evaluate_link(run, cache, checkpoints, 1, first.result.sae, None, desc="l2", device="cpu",
                                     progress=False)  # fmt: skip
    step = run.sae_steps[1]
    scale = activation_scale(cache.train_head(step, ACTIVATION_SCALE_ROWS))
    l1 = link_l1_coefficient(run, scale, cache.d_model)
    by_hand = train_link(
        run, recurrent_init(first.result.sae, run.chain, l1_coefficient=l1, metadata=sae_metadata(run, step)),
        cache, step, n_tokens=run.chain.link_tokens, lr=run.chain.lr_link, warmup=run.chain.warmup_steps_link,
        seed=link_seed(run, "chain", 1), optimizer_state=None, desc="l2", progress=False, keep_optimizer_state=False,
    )  # fmt: skip
    assert second.scale == scale and second.result.l1_coefficient == pytest.approx(l1)
    np.testing.assert_array_equal(second.result.sae.W_dec.detach().numpy(), by_hand.sae.W_dec.detach().numpy())
    assert second.quality == pytest.approx(evaluate_link(run, by_hand.sae, cache, step, checkpoints), nan_ok=True)
    assert set(save_link(run, second.result, tmp_path / "fresh")) >= {"sae_weights.safetensors", "cfg.json"}
    assert not (tmp_path / "fresh" / OPTIMIZER_FILE).exists()  # Adam's state is kept only when carried


def test_save_link_keeps_adams_state_when_it_is_carried(smoke_run_dir, tmp_path) -> None:
    run = get_preset("smoke").with_overrides({"chain.first_tokens": 2048, "chain.optimizer_policy": "carry"})
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(run.model, smoke_run_dir)
    first = train_and_evaluate_link(run, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    save_link(run, first.result, tmp_path / "link")
    state = torch.load(tmp_path / "link" / OPTIMIZER_FILE, weights_only=False)
    carried = first.result.optimizer_state
    assert carried is not None and state["state"].keys() == carried["state"].keys() and state["state"]
    for key, moments in state["state"].items():
        torch.testing.assert_close(moments["exp_avg"], carried["state"][key]["exp_avg"], rtol=0, atol=0)
