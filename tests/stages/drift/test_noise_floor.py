"""The drift noise floor: links retrained on an unchanged checkpoint, on known answers (a tiny in-memory source)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack.config import RunConfig
from saetrack.sae.model import build_sae
from saetrack.sae.recurrent import recurrent_init
from saetrack.sae.training import shuffled_batches
from saetrack.stages.chain.links import link_seed, sae_metadata, train_link
from saetrack.stages.drift import noise_floor as nf
from saetrack.stages.drift.noise_floor import (
    kept_noise_floor,
    noise_chain_cosines,
    noise_floor_links,
    noise_floor_numbers,
    noise_link_seed,
    run_noise_floor,
)

D_MODEL = 8
ROWS = 4096


class _Rows:
    """The one method of an activation source that link training reads: seeded shuffled batches of fixed rows."""

    d_model = D_MODEL

    def __init__(self, seed: int = 0) -> None:
        self.rows = np.random.default_rng(seed).standard_normal((ROWS, D_MODEL)).astype(np.float32)
        self.read: list[tuple[int, int]] = []

    def train_batches(self, step: int, *, start: int = 0, n_tokens: int, batch_size: int, seed: int,
                      dtype: torch.dtype = torch.float32, device: str = "cpu") -> Iterator[torch.Tensor]:  # fmt: skip
        self.read.append((start, n_tokens))
        rows = self.rows[start : start + n_tokens]
        return shuffled_batches(rows, batch_size, seed=seed, dtype=dtype, device=device)


@pytest.fixture(scope="module")
def tiny(smoke: RunConfig) -> RunConfig:
    return smoke.with_overrides({"chain.batch_size": 128})


def test_noise_seeds_are_derived_from_the_run_seed_and_differ_per_link(tiny: RunConfig) -> None:
    seeds = [noise_link_seed(tiny, m) for m in range(1, 9)]
    assert len(set(seeds)) == 8 and seeds == [noise_link_seed(tiny, m) for m in range(1, 9)]
    assert not set(seeds) & {link_seed(tiny, kind, p) for kind in ("chain", "baseline", "probe") for p in range(9)}
    assert seeds[0] == int(np.random.SeedSequence([tiny.seed, 3, 1]).generate_state(1)[0])
    assert noise_link_seed(tiny.with_overrides({"seed": 1}), 1) != seeds[0]
    # the chain's seed, when set, draws them instead of the run seed (which also seeds the model)
    assert noise_link_seed(tiny.with_overrides({"seed": 5, "chain.seed": 0}), 1) == seeds[0]


def test_noise_floor_links_default_to_the_chain_links_after_the_first(tiny: RunConfig) -> None:
    assert noise_floor_links(tiny, 8) == 7 and noise_floor_links(tiny, 1) == 0
    assert noise_floor_links(tiny.with_overrides({"drift.noise_floor_links": 3}), 8) == 3
    assert noise_floor_links(tiny.with_overrides({"drift.noise_floor_links": 0}), 8) == 0
    # the run's own chain (the token plan reads this): T - 1 links of the schedule
    assert tiny.noise_floor_links == len(tiny.chain.schedule) - 1


def test_a_noise_chain_that_cannot_move_keeps_every_direction(tiny: RunConfig) -> None:
    # lr 1e-30: every Adam update is far below float32 resolution, so the decoder does not change
    sae = build_sae(D_MODEL, tiny.chain, seed=0)
    cos = noise_chain_cosines(tiny, sae, _Rows(), 48, 3, l1_coefficient=1e-3, n_tokens=512, lr=1e-30)
    assert cos.shape == (3, D_MODEL * tiny.chain.expansion_factor)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def test_noise_links_are_chain_links_on_fresh_rows_with_their_own_seeds(tiny: RunConfig) -> None:
    sae = build_sae(D_MODEL, tiny.chain, seed=1)
    before = sae.W_dec.detach().clone()
    source = _Rows()
    cos = noise_chain_cosines(tiny, sae, source, 48, 2, l1_coefficient=1e-3, n_tokens=512)
    torch.testing.assert_close(sae.W_dec.detach(), before, rtol=0, atol=0)  # the final SAE is left unchanged
    # link m reads rows [m n, (m + 1) n): rows [0, n) are the final link's own, so every noise link reads fresh ones
    assert source.read == [(512, 512), (1024, 512)]
    # link 1 by hand, exactly as a chain link: recurrent initialisation, link lr and warm-up, the noise seed
    link = recurrent_init(sae, tiny.chain, l1_coefficient=1e-3, metadata=sae_metadata(tiny, 48))
    result = train_link(tiny, link, source, 48, start=512, n_tokens=512, lr=tiny.chain.lr_link,
                        warmup=tiny.chain.warmup_steps_link, seed=noise_link_seed(tiny, 1), optimizer_state=None,
                        desc="by hand", progress=False)  # fmt: skip
    w, w0 = result.sae.W_dec.detach().double(), before.double()
    expected = (w * w0).sum(1) / (w.norm(dim=1) * w0.norm(dim=1))
    np.testing.assert_allclose(cos[0], expected.numpy(), atol=1e-6)
    assert (cos < 1 - 1e-6).any() and np.all(np.abs(cos) <= 1)  # training moves directions
    np.testing.assert_array_equal(cos, noise_chain_cosines(tiny, sae, source, 48, 2, l1_coefficient=1e-3,
                                                           n_tokens=512))  # fmt: skip


def test_under_the_continuity_rule_noise_links_read_past_the_rows_a_restarted_final_link_reads(tiny) -> None:
    ruled = tiny.with_overrides({"chain.restart_below": 0.0, "chain.first_tokens": 1024})
    source = _Rows()
    noise_chain_cosines(ruled, build_sae(D_MODEL, ruled.chain, seed=1), source, 48, 2, l1_coefficient=1e-3,
                        n_tokens=512)  # fmt: skip
    assert source.read == [(1024, 512), (1536, 512)]  # rows [0, first_tokens) may be the final link's


def test_no_floor_asked_for_trains_nothing(tiny: RunConfig, tmp_path: Path) -> None:
    off = tiny.with_overrides({"drift.noise_floor_links": 0})
    cos, record = run_noise_floor(off, tmp_path, {0: tmp_path / "missing", 4: tmp_path / "missing"}, progress=False)
    assert cos.shape == (0, tiny.chain.expansion_factor * tiny.model.d_model)
    assert record["links"] == 0 and record["skipped"] is None and record["step"] == 4


def test_the_kept_floor_is_read_back_until_forced_or_the_chain_changes(
    tiny: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []

    def floor(run: RunConfig, run_dir: Path, folders: dict, **kw: object) -> tuple[np.ndarray, dict]:
        computed.append(run.chain.link_tokens)
        return np.full((2, 3), float(len(computed))), {"links": 2, "n": len(computed)}

    monkeypatch.setattr(nf, "run_noise_floor", floor)
    first, record = kept_noise_floor(tiny, tmp_path, {}, progress=False)
    again, kept = kept_noise_floor(tiny, tmp_path, {}, progress=False)
    assert computed == [tiny.chain.link_tokens] and kept == record == {"links": 2, "n": 1}
    np.testing.assert_array_equal(again, first)
    assert kept_noise_floor(tiny, tmp_path, {}, progress=False, force=True)[1]["n"] == 2
    other = tiny.with_overrides({"chain.link_tokens": tiny.chain.link_tokens * 2})  # another chain: another floor
    assert kept_noise_floor(other, tmp_path, {}, progress=False)[1]["n"] == 3


def test_noise_floor_numbers_on_a_known_chain() -> None:
    steps = np.array([0, 1, 2, 4, 8, 16])
    median = np.array([0.1, 0.5, 0.6, 0.79, 0.95, 1.0])
    floor = np.array([[0.9, 0.93, 0.96], [0.8, 0.85, 0.9], [0.7, 0.75, 0.8]])  # 5/25/50% after 1, 2, 3 links
    numbers = noise_floor_numbers({"links": 3}, steps, median, floor)
    assert numbers["links"] == 3 and numbers["median_after_1_link"] == 0.96
    assert numbers["median_after_all_links"] == 0.8 and numbers["q05_after_all_links"] == 0.7
    assert [c["step"] for c in numbers["per_checkpoint"]] == [2, 4, 8]
    assert [c["beyond_noise"] for c in numbers["per_checkpoint"]] == [True, True, False]
    assert [c["floor_q05"] for c in numbers["per_checkpoint"]] == [0.7, 0.8, 0.9]
    assert numbers["checkpoints_beyond_noise"] == 2 and numbers["last_checkpoint_beyond_noise"] == 4
    assert numbers["steps_within_noise"] == [8]
    none = noise_floor_numbers({"links": 0}, steps, median, np.zeros((0, 3)))
    assert none["median_after_1_link"] is None and none["last_checkpoint_beyond_noise"] is None
