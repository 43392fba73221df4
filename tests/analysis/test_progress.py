"""Known-answer tests of the progress measure and its similarity metrics (paper Eq. 14-19, 27-29)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from saetrack.analysis.progress import (
    METRICS,
    masked_mean_cosine,
    normalised_progress,
    pairwise_mean_similarity,
    progress_measure,
    random_baseline,
    random_indices,
    within_set_similarity,
)


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _ref_sim(u: np.ndarray, v: np.ndarray, metric: str) -> float | None:
    """Plain-Python similarity of one pair; None for an excluded (empty-union) Jaccard pair."""
    if metric == "cosine":
        nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
        return 0.0 if nu == 0 or nv == 0 else sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv)
    if metric == "jaccard":
        su, sv = {i for i, a in enumerate(u) if a > 0}, {i for i, b in enumerate(v) if b > 0}
        return None if not su | sv else len(su & sv) / len(su | sv)
    smax = sum(max(a, b) for a, b in zip(u, v, strict=True))
    return None if smax == 0 else sum(min(a, b) for a, b in zip(u, v, strict=True)) / smax


@pytest.mark.parametrize("metric", METRICS)
def test_identical_vectors_similarity_one_and_progress(metric: str) -> None:
    one_set = _t([[1.0, 2.0, 0.0, 3.0]] * 4)
    assert pairwise_mean_similarity(one_set, metric).item() == pytest.approx(1.0)
    sets = one_set.expand(2, 4, 4)  # [F, k, d]: identical vectors in every set
    for baseline in (0.1, 0.25, 0.5):
        measure = progress_measure(pairwise_mean_similarity(sets, metric), baseline)  # Eq. 14 / 17
        assert measure.shape == (2,) and measure.dtype == np.float64
        np.testing.assert_allclose(measure, [1.0 - baseline] * 2, rtol=0, atol=1e-12)


def test_cosine_orthogonal_opposite_and_hand_example() -> None:
    assert pairwise_mean_similarity(_t([[1, 0], [0, 3]]), "cosine").item() == pytest.approx(0.0)
    assert pairwise_mean_similarity(_t([[1, 2], [-2, -4]]), "cosine").item() == pytest.approx(-1.0)
    # u=(1,0), v=(1,1), w=(0,2): cos(u,v)=1/sqrt2, cos(u,w)=0, cos(v,w)=2/(sqrt2*2)=1/sqrt2
    expected = (1 / math.sqrt(2) + 0.0 + 1 / math.sqrt(2)) / 3
    assert pairwise_mean_similarity(_t([[1, 0], [1, 1], [0, 2]]), "cosine").item() == pytest.approx(expected)


def test_cosine_zero_vector_counts_as_zero() -> None:
    # pairs: (u,u)=1, (u,0)=0, (u,0)=0 -> mean 1/3
    assert pairwise_mean_similarity(_t([[1, 1], [2, 2], [0, 0]]), "cosine").item() == pytest.approx(1 / 3)


def test_jaccard_known_answers() -> None:
    assert pairwise_mean_similarity(_t([[1, 0, 0], [0, 2, 3]]), "jaccard").item() == pytest.approx(0.0)
    assert pairwise_mean_similarity(_t([[1, 5, 0], [0, 2, 3]]), "jaccard").item() == pytest.approx(1 / 3)
    # pairs: (a,b)=1/3, (a,0) and (b,0) have non-empty unions -> 0; only (0,0) would be excluded
    with_zero = _t([[1, 5, 0], [0, 2, 3], [0, 0, 0]])
    assert pairwise_mean_similarity(with_zero, "jaccard").item() == pytest.approx(1 / 9)
    # two empty supports: their pair is excluded; (a,b)=1/3 and the four (a or b, empty) pairs = 0 remain
    two_zero = _t([[1, 5, 0], [0, 2, 3], [0, 0, 0], [0, -1, 0]])
    assert pairwise_mean_similarity(two_zero, "jaccard").item() == pytest.approx((1 / 3) / 5)
    assert math.isnan(pairwise_mean_similarity(_t([[0, 0], [0, -1], [0, 0]]), "jaccard").item())


def test_weighted_jaccard_known_answers() -> None:
    assert pairwise_mean_similarity(_t([[1, 2, 0], [2, 1, 0]]), "weighted_jaccard").item() == pytest.approx(0.5)
    binary = (torch.rand(5, 6, 10, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    torch.testing.assert_close(
        pairwise_mean_similarity(binary, "weighted_jaccard"), pairwise_mean_similarity(binary, "jaccard")
    )
    assert math.isnan(pairwise_mean_similarity(torch.zeros(3, 4), "weighted_jaccard").item())
    with pytest.raises(ValueError, match="non-negative"):
        pairwise_mean_similarity(_t([[1, -0.5], [1, 1]]), "weighted_jaccard")


def test_chunking_does_not_change_result() -> None:
    x = torch.rand(7, 5, 6, 12, generator=torch.Generator().manual_seed(2)).clamp_min(0.3) - 0.3
    small = pairwise_mean_similarity(x, "weighted_jaccard", chunk=1)
    large = pairwise_mean_similarity(x, "weighted_jaccard", chunk=64)
    assert small.shape == (7, 5)
    torch.testing.assert_close(small, large, atol=1e-12, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_vectorised_equals_double_loop(metric: str) -> None:
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=(2, 3, 5, 8)), 0.0) if metric != "cosine" else rng.normal(size=(2, 3, 5, 8))
    x[0, 0, 1] = 0.0  # a zero vector exercises the zero / empty-union conventions
    got = pairwise_mean_similarity(torch.from_numpy(x), metric)
    assert got.dtype == torch.float64 and got.shape == (2, 3)
    for a in range(2):
        for b in range(3):
            sims = [_ref_sim(x[a, b, j], x[a, b, k], metric) for j, k in combinations(range(5), 2)]
            kept = [s for s in sims if s is not None]
            assert got[a, b].item() == pytest.approx(sum(kept) / len(kept), abs=1e-12)


def test_random_baseline_is_the_mean_similarity_of_a_fixed_random_set() -> None:
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(4))
    idx1, idx2 = random_indices(30, 10, seed=7), random_indices(30, 10, seed=7)
    np.testing.assert_array_equal(idx1, idx2)  # the same datapoints at every checkpoint
    assert len(set(idx1.tolist())) == 10
    subset = x[torch.from_numpy(idx1)]
    assert random_baseline(subset, "cosine") == pytest.approx(pairwise_mean_similarity(subset, "cosine").item())
    # two orthogonal and one opposite direction: cosines 0, 0 and -1 average to -1/3 (Eq. 16 by hand)
    assert random_baseline(_t([[1, 0], [0, 1], [-1, 0]]), "cosine") == pytest.approx(-1 / 3)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="metric must be one of"):
        pairwise_mean_similarity(torch.rand(3, 4), "euclidean")
    with pytest.raises(ValueError, match="n=1"):
        pairwise_mean_similarity(torch.rand(1, 4), "cosine")
    with pytest.raises(ValueError, match="n_random"):
        random_indices(5, 6, seed=0)
    with pytest.raises(ValueError, match="x_random"):
        random_baseline(torch.rand(2, 5, 3), "cosine")


def test_within_set_similarity_adds_the_baseline_back() -> None:
    progress = np.array([[0.5, -0.1], [0.2, 0.3]])
    within = within_set_similarity(progress, np.array([0.3, 0.1]))
    np.testing.assert_allclose(within, [[0.8, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match="baseline"):
        within_set_similarity(progress, np.zeros(3))


def test_normalised_progress_on_hand_made_values() -> None:
    within = np.array([[0.85, 1.0, 0.5], [0.58, 0.14, 0.3]])
    baseline = np.array([0.63, 0.14])
    n = normalised_progress(within, baseline)
    # the reviewer's concept-level medians: M rises 0.22 -> 0.44 while N falls (0.22 / 0.37 -> 0.44 / 0.86)
    np.testing.assert_allclose(n[:, 0], [0.22 / 0.37, 0.44 / 0.86])
    np.testing.assert_allclose(n[:, 1], [1.0, 0.0])  # identical directions -> 1; as similar as random -> 0
    assert n[1, 0] < n[0, 0] and (within - baseline[:, None])[1, 0] > (within - baseline[:, None])[0, 0]
    assert np.isnan(normalised_progress(np.array([[1.0]]), np.array([1.0]))[0, 0])  # no room above B = 1
    with pytest.raises(ValueError, match="baseline"):
        normalised_progress(within, np.array([0.1]))


def test_masked_mean_cosine_equals_the_full_measure_when_every_member_is_kept() -> None:
    x = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = pairwise_mean_similarity(x, "cosine").numpy()
    np.testing.assert_allclose(masked_mean_cosine(x, np.ones((3, 6), dtype=bool)), full)


def test_masked_mean_cosine_leaves_out_the_dropped_members() -> None:
    # kept: (1,0) and (1,1) -> cosine 1/sqrt2; the dropped (-1,0) would pull the mean down
    sets = np.array([[[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    mask = np.array([[True, True, False], [True, False, False]])
    out = masked_mean_cosine(sets, mask)
    assert out[0] == pytest.approx(1 / math.sqrt(2))
    assert np.isnan(out[1])  # one kept member: no pair
    with pytest.raises(ValueError, match="mask"):
        masked_mean_cosine(sets, mask[:, :2])
