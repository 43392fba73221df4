"""The continuity rules of the chain: the previous link carried to a new checkpoint, the continued link's L0 against
the previous link's, and the restart each decides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import store
from saetrack.analysis.metrics import reconstruction_metrics
from saetrack.config import get_preset
from saetrack.data.activations import ActivationCache
from saetrack.data.checkpoints import open_source
from saetrack.sae.model import build_sae
from saetrack.stages.chain.continuity import (
    ChainBreakError,
    breaks_chain,
    carried_explained_variance,
    chain_restarts,
    l0_breaks_chain,
    require_continuous,
    restart_note,
)
from saetrack.stages.chain.links import (
    ACTIVATION_SCALE_ROWS,
    activation_scale,
    link_l1_coefficient,
    link_seed,
    sae_metadata,
    train_and_evaluate_link,
    train_link,
)


class _Heldout:
    """The one method the reading uses: held-out activations of a step."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def heldout(self, step: int) -> np.ndarray:
        return self.rows


def test_the_rule_on_known_values(smoke) -> None:
    at_zero = smoke.with_overrides({"chain.restart_below": 0.0})
    assert breaks_chain(at_zero, -0.4) and breaks_chain(at_zero, 0.0)  # at or below the threshold
    assert not breaks_chain(at_zero, 0.01) and not breaks_chain(at_zero, float("nan"))  # NaN: no variance to judge
    assert not breaks_chain(at_zero, None)  # a first link
    assert not breaks_chain(smoke, -5.0)  # the rule off (the paper's chain)
    assert not breaks_chain(smoke.with_overrides({"chain.restart_below": -1.0}), -0.5)


def test_a_dictionary_that_gives_back_only_the_mean_explains_nothing_and_breaks_the_chain(smoke) -> None:
    rows = np.random.default_rng(0).standard_normal((512, 32)).astype(np.float32) + 3.0
    sae = build_sae(32, smoke.chain, seed=0)
    with torch.no_grad():  # no feature ever fires: the reconstruction is b_dec, here the rows' own mean
        sae.b_enc.fill_(-1e6)
        sae.b_dec.copy_(torch.from_numpy(rows.astype(np.float64).mean(0)).float())
    carried = carried_explained_variance(smoke, sae, _Heldout(rows), 7)
    assert carried == pytest.approx(0.0, abs=1e-6)
    assert carried == reconstruction_metrics(sae, rows, batch_size=smoke.chain.batch_size)["explained_variance"]
    assert breaks_chain(smoke.with_overrides({"chain.restart_below": 1e-5}), carried)


def test_a_restarted_link_is_trained_exactly_as_a_first_link(smoke_run_dir) -> None:
    run = get_preset("smoke").with_overrides({"chain.first_tokens": 8192, "chain.restart_below": 2.0})  # always
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(run.model, smoke_run_dir)
    first = train_and_evaluate_link(run, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    assert first.carried_explained_variance is None and not first.restarted
    second = train_and_evaluate_link(run, cache, checkpoints, 1, first.result.sae, None, desc="l2", device="cpu",
                                     progress=False)  # fmt: skip
    step = run.sae_steps[1]
    assert second.restarted
    assert second.carried_explained_variance == carried_explained_variance(run, first.result.sae, cache, step)
    l1 = link_l1_coefficient(run, activation_scale(cache.train_head(step, ACTIVATION_SCALE_ROWS)), cache.d_model)
    fresh = build_sae(cache.d_model, dataclasses.replace(run.chain, l1_coefficient=l1), seed=link_seed(run, "chain", 1),
                      metadata=sae_metadata(run, step))  # fmt: skip
    by_hand = train_link(run, fresh, cache, step, n_tokens=run.chain.first_tokens, lr=run.chain.lr_first,
                         warmup=run.chain.warmup_steps_first, seed=link_seed(run, "chain", 1), optimizer_state=None,
                         desc="by hand", progress=False, keep_optimizer_state=False)  # fmt: skip
    assert second.result.n_tokens == run.chain.first_tokens != run.chain.link_tokens
    np.testing.assert_array_equal(second.result.sae.W_dec.detach().numpy(), by_hand.sae.W_dec.detach().numpy())
    assert "chain restarted here" in restart_note({"restarted": True, "carried_explained_variance": -0.25})


def test_a_link_that_carries_continues_unchanged_and_records_the_reading(smoke_run_dir) -> None:
    off = get_preset("smoke").with_overrides({"chain.first_tokens": 4096})
    never = off.with_overrides({"chain.restart_below": -1e9})
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(off.model, smoke_run_dir)
    first = train_and_evaluate_link(off, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    links = [train_and_evaluate_link(run, cache, checkpoints, 1, first.result.sae, None, desc="l2", device="cpu",
                                     progress=False) for run in (off, never)]  # fmt: skip
    assert links[0].carried_explained_variance is None  # the rule off: nothing measured
    assert not links[1].restarted and np.isfinite(links[1].carried_explained_variance)
    assert links[1].result.n_tokens == off.chain.link_tokens
    weights = [link.result.sae.W_dec.detach().numpy() for link in links]
    np.testing.assert_array_equal(weights[0], weights[1])
    assert restart_note({"restarted": False, "carried_explained_variance": 0.9}) == ""


def test_the_outcome_rule_on_known_values(smoke) -> None:
    twice = smoke.with_overrides({"chain.restart_l0_ratio": 2.0})
    assert not l0_breaks_chain(twice, 64.0, 32.0) and not l0_breaks_chain(twice, 16.0, 32.0)  # the band's ends
    assert l0_breaks_chain(twice, 64.1, 32.0) and l0_breaks_chain(twice, 15.9, 32.0)
    assert l0_breaks_chain(twice, 128.0, 32.7)  # the random-weight network's continued link (docs/live.md)
    assert not l0_breaks_chain(twice, 26.2, 19.9)  # nano's largest adjacent change, step 8 to 16 (1.32x)
    assert not l0_breaks_chain(twice, 5.0, 0.0)  # a previous link with no firing feature: nothing to hold
    assert not l0_breaks_chain(smoke, 1000.0, 1.0)  # the rule off (the paper's chain)


def test_the_outcome_rule_needs_the_previous_links_recorded_l0(smoke_run_dir) -> None:
    run = get_preset("smoke").with_overrides({"chain.first_tokens": 4096})
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(run.model, smoke_run_dir)
    first = train_and_evaluate_link(run, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    ruled = run.with_overrides({"chain.restart_l0_ratio": 2.0})
    with pytest.raises(ValueError, match=r"^l2: chain\.restart_l0_ratio needs the previous link's held-out L0"):
        train_and_evaluate_link(ruled, cache, checkpoints, 1, first.result.sae, None, desc="l2", device="cpu",
                                progress=False)  # fmt: skip


def test_a_continued_link_outside_the_band_is_retrained_as_a_first_link(smoke_run_dir) -> None:
    base = get_preset("smoke").with_overrides({"chain.first_tokens": 4096})
    cache, checkpoints = ActivationCache(smoke_run_dir, get_preset("smoke")), open_source(base.model, smoke_run_dir)
    first = train_and_evaluate_link(base, cache, checkpoints, 0, None, None, desc="l1", device="cpu", progress=False)
    links = {}
    for name, ratio in (("off", None), ("wide", 1e9), ("tight", 1.0 + 1e-12)):
        run = base.with_overrides({"chain.restart_l0_ratio": ratio})
        links[name] = train_and_evaluate_link(run, cache, checkpoints, 1, first.result.sae, None, desc="l2",
                                              device="cpu", progress=False,
                                              previous_l0=first.quality["l0"])  # fmt: skip
    off, wide, tight = links["off"], links["wide"], links["tight"]
    assert off.previous_l0 is None and off.continued_l0 is None and not off.restarted  # nothing measured
    assert wide.previous_l0 == first.quality["l0"] and wide.continued_l0 == off.quality["l0"] != first.quality["l0"]
    assert not wide.restarted and wide.restart_cause is None and not wide.first
    np.testing.assert_array_equal(wide.result.sae.W_dec.detach().numpy(), off.result.sae.W_dec.detach().numpy())
    # a band narrower than any change: the continued link (L0 off's) is thrown away and a first link trained instead
    assert tight.restarted and tight.restart_cause == "l0" and tight.first and tight.lr == base.chain.lr_first
    assert tight.continued_l0 == off.quality["l0"] and tight.result.n_tokens == base.chain.first_tokens
    always = base.with_overrides({"chain.restart_below": 2.0})  # the first-link recipe, reached by the other rule
    by_carried = train_and_evaluate_link(always, cache, checkpoints, 1, first.result.sae, None, desc="l2",
                                         device="cpu", progress=False)  # fmt: skip
    np.testing.assert_array_equal(tight.result.sae.W_dec.detach().numpy(), by_carried.result.sae.W_dec.detach().numpy())
    note = restart_note({"restarted": True, "restart_cause": "l0", "continued_l0": 128.0, "previous_l0": 32.7})
    assert "reached L0 128.0 against the previous link's 32.7" in note


def test_analyses_that_follow_feature_indices_refuse_a_chain_that_restarted(tmp_path: Path) -> None:
    def links(restarted: dict[int, bool | None]) -> dict[int, Path]:
        folders = {}
        for step, flag in restarted.items():
            folder = tmp_path / f"{len(restarted)}-links" / f"step{step}"
            record = {"step": step} if flag is None else {"step": step, "restarted": flag}
            store.write_manifest(folder, stage="chain-link", config={}, config_hash="h", link=record)
            folders[step] = folder
        return folders

    paper = links({0: None, 1: None, 2: None})  # the rules off: no reading recorded
    assert chain_restarts(paper) == []
    require_continuous(paper, "drift")  # nothing to refuse
    broken = links({0: False, 10: True, 30: True, 40: False})
    assert chain_restarts(broken) == [10, 30]
    with pytest.raises(ChainBreakError, match=r"^drift \(notebook 04\) reads .*restarted at step 10, 30 .*"
                                              r"--set chain\.restart_l0_ratio=None"):  # fmt: skip
        require_continuous(broken, "drift (notebook 04)")
