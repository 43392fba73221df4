"""saetrack.analysis.formation: activation sets, progress measures along a chain, checkpoint positions, UMAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saetrack.analysis import formation as fm
from saetrack.analysis.formation import (
    PROGRESS_KEYS,
    activation_sets,
    checkpoint_positions,
    choose_checkpoints,
    progress_measures,
    umap_embedding,
)
from saetrack.analysis.progress import pairwise_mean_similarity, progress_measure, random_baseline, random_indices
from saetrack.sae.weights import feature_activations
from tests.analysis.helpers import chain_problem

METRIC_OF = {
    "activation_cosine": "cosine",
    "feature_cosine": "cosine",
    "feature_jaccard": "jaccard",
    "feature_weighted_jaccard": "weighted_jaccard",
}


def test_activation_sets_gathers_rows_at_every_step() -> None:
    analysis = [np.arange(12, dtype=np.float32).reshape(6, 2) + 100 * t for t in range(3)]
    indices = np.array([[5, 0, 2], [1, 1, 4]])
    sets = activation_sets(analysis, indices)
    assert sets.shape == (3, 2, 3, 2) and sets.dtype == np.float32
    for t in range(3):
        for i in range(2):
            for j in range(3):
                np.testing.assert_array_equal(sets[t, i, j], analysis[t][indices[i, j]])
    np.testing.assert_array_equal(sets[2, 0, 0], [210.0, 211.0])


def test_activation_sets_rejects_bad_input() -> None:
    analysis = [np.zeros((5, 2), dtype=np.float32)] * 2
    with pytest.raises(ValueError, match="indices must lie in"):
        activation_sets(analysis, np.array([[0, 5]]))
    with pytest.raises(ValueError, match="same shape"):
        activation_sets([analysis[0], np.zeros((4, 2), dtype=np.float32)], np.array([[0, 1]]))


def test_identical_datapoints_give_one_minus_baseline() -> None:
    analysis, weights = chain_problem()
    analysis[1][7] = analysis[1][3] * 2.5  # same direction at step 1 only
    indices = np.array([[3, 7], [10, 11]])
    result = progress_measures(analysis, weights, indices, n_random_activation=40, n_random_feature=30)
    base = result["baseline_activation_cosine"]
    assert result["activation_cosine"][1, 0] == pytest.approx(1.0 - base[1], abs=1e-6)
    assert result["activation_cosine"][0, 0] < 1.0 - base[0] - 1e-3  # random vectors at the other steps
    # Repeating one datapoint k times: every pair is identical, so within-set similarity is exactly 1.
    result = progress_measures(analysis, weights, np.array([[4, 4, 4, 4]]), n_random_activation=40)
    np.testing.assert_allclose(result["activation_cosine"][:, 0], 1.0 - result["baseline_activation_cosine"])
    np.testing.assert_allclose(result["feature_cosine"][:, 0], 1.0 - result["baseline_feature_cosine"])


def test_progress_measures_match_progress_module_and_ignore_chunking() -> None:
    analysis, weights = chain_problem()
    rng = np.random.default_rng(5)
    indices = np.stack([rng.choice(200, size=6, replace=False) for _ in range(9)])
    kwargs = {"n_random_activation": 50, "n_random_feature": 20, "seed": 3}
    result = progress_measures(analysis, weights, indices, feature_chunk=1000, **kwargs)
    chunked = progress_measures(analysis, weights, indices, feature_chunk=1, **kwargs)

    acts = torch.from_numpy(activation_sets(analysis, indices))  # [T, F, k, d]
    codes = torch.stack([feature_activations(w, acts[t]) for t, w in enumerate(weights)])
    all_acts = torch.from_numpy(np.stack(analysis))  # [T, N, d]
    all_codes = torch.stack([feature_activations(w, all_acts[t]) for t, w in enumerate(weights)])
    for key in PROGRESS_KEYS:
        metric = METRIC_OF[key]
        sets, everything = (acts, all_acts) if key.startswith("activation") else (codes, all_codes)
        n_random = kwargs["n_random_activation"] if key.startswith("activation") else kwargs["n_random_feature"]
        chosen = torch.from_numpy(random_indices(everything.shape[1], n_random, seed=3))
        baseline = np.array([random_baseline(everything[t][chosen], metric) for t in range(len(weights))])
        expected = np.stack(
            [progress_measure(pairwise_mean_similarity(sets[t], metric), baseline[t]) for t in range(len(weights))]
        )
        assert result[key].shape == (3, 9) and result[key].dtype == np.float64
        np.testing.assert_allclose(result[key], expected, rtol=1e-6, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(result[f"baseline_{key}"], baseline, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(chunked[key], result[key], rtol=0, atol=1e-12, err_msg=key)
        assert np.all(np.isfinite(result[key]))


def test_one_checkpoint_at_a_time_gives_the_same_measures_as_all_at_once() -> None:
    analysis, weights = chain_problem(n_steps=3)
    indices = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    kwargs = dict(n_random_activation=30, n_random_feature=20, seed=4)
    together = progress_measures(analysis, weights, indices, **kwargs)
    for t, (x, w) in enumerate(zip(analysis, weights, strict=True)):
        alone = progress_measures([x], [w], indices, progress=False, **kwargs)
        for key, value in together.items():
            np.testing.assert_array_equal(alone[key][0], value[t], err_msg=f"{key} at checkpoint {t}")


def test_random_baseline_uses_the_same_datapoints_at_every_step() -> None:
    # The same analysis array at every step: the random set (drawn once) must give the same baseline every step.
    analysis, weights = chain_problem(n_steps=1)
    result = progress_measures(analysis * 3, weights * 3, np.array([[0, 1]]), n_random_activation=40, seed=1)
    again = progress_measures(analysis * 3, weights * 3, np.array([[0, 1]]), n_random_activation=40, seed=1)
    other = progress_measures(analysis * 3, weights * 3, np.array([[0, 1]]), n_random_activation=40, seed=2)
    for key in PROGRESS_KEYS:
        base = result[f"baseline_{key}"]
        assert base.shape == (3,) and np.all(base == base[0]), key
        np.testing.assert_array_equal(again[f"baseline_{key}"], base)
        assert not np.allclose(other[f"baseline_{key}"], base), key


def test_checkpoint_positions() -> None:
    paper = list(range(12)) + list(range(13, 33, 2)) + list(range(33, 153, 20))  # Eq. 26, 28 SAEs
    assert checkpoint_positions(list(range(154))) == [0, 5, 10, 15, 60, 153]
    positions = checkpoint_positions(paper)
    assert len(positions) == 6 and len(set(positions)) == 6
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == 27
    assert positions == [0, 1, 2, 3, 11, 27]
    assert checkpoint_positions([0, 1, 2, 3, 4, 5, 6]) == [0, 1, 2, 3, 4, 6]
    assert checkpoint_positions([1, 2, 3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="strictly increasing"):
        checkpoint_positions([0, 2, 1])


def test_choose_checkpoints_from_the_phases() -> None:
    # flat to index 4, rising to index 10, flat after: Emergent [4, 10), Convergent from 10
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600]
    curve = np.concatenate([np.zeros(5), np.linspace(0.1, 0.6, 6), np.full(3, 0.6)])
    choice = choose_checkpoints(steps, curve, min_phase=2)
    assert choice.rule == "phases" and choice.fallback is None
    assert (choice.emergent, choice.convergent) == (4, 10)
    # Fig. 2: first, middle of [4, 10) = 7, end of Emergent = 10, final
    assert [e["position"] for e in choice.fig2] == [0, 7, 10, 13]
    assert [e["step"] for e in choice.fig2] == [0, 64, 300, 600]
    assert [e["phase"] for e in choice.fig2] == ["Initialization & Warmup", "Emergent", "Convergent", "Convergent"]
    assert choice.fig2[2]["why"] == "end of the Emergent phase"
    # Fig. 4: first, middle of [0, 4) = 2, start of Emergent 4, middle 7, start of Convergent 10, final
    assert [e["position"] for e in choice.fig4] == [0, 2, 4, 7, 10, 13]
    assert choice.record()["fig4"][1]["why"] == "middle of the Initialization & Warmup phase"


def test_choose_checkpoints_merges_coinciding_choices() -> None:
    # Emergent [2, 4): its middle is 3; Initialization's middle is 1
    curve = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    choice = choose_checkpoints(list(range(7)), curve, min_phase=2)
    assert (choice.emergent, choice.convergent) == (2, 4)
    assert [e["position"] for e in choice.fig4] == [0, 1, 2, 3, 4, 6]
    # one-checkpoint phases: Emergent [1, 2), so its start and middle coincide, and so do the first checkpoint and
    # the middle of Initialization [0, 1): each is shown once, its reasons joined
    short = choose_checkpoints(list(range(6)), np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), min_phase=1)
    assert (short.emergent, short.convergent) == (1, 2)
    assert [e["position"] for e in short.fig4] == [0, 1, 2, 5]
    assert short.fig4[1]["why"] == "start of the Emergent phase = middle of the Emergent phase"
    assert short.fig4[0]["why"] == "first checkpoint = middle of the Initialization & Warmup phase"


def test_choose_checkpoints_falls_back_to_index_fractions() -> None:
    few = choose_checkpoints([0, 1, 2, 4, 8], np.linspace(0, 1, 5), min_phase=2)
    assert few.rule == "index fraction" and "fewer than 3 * min_phase_checkpoints = 6" in (few.fallback or "")
    assert [e["position"] for e in few.fig2] == [0, 1, 4] and few.emergent is None
    assert [e["position"] for e in few.fig4] == [0, 1, 2, 3, 4]
    assert all(e["phase"] is None for e in few.fig2)
    no_fit = choose_checkpoints(list(range(8)), np.full(8, np.nan), min_phase=2)
    assert no_fit.rule == "index fraction" and no_fit.fallback.startswith("no phase fit")


@pytest.mark.slow
def test_umap_embedding_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 5
    points = np.concatenate([c + rng.standard_normal((20, 16)) for c in centres])
    first = umap_embedding(points, seed=42)
    assert first.shape == (60, 2) and np.all(np.isfinite(first))
    np.testing.assert_array_equal(umap_embedding(points, seed=42), first)


@pytest.mark.slow
def test_umap_embedding_of_repeated_rows_is_deterministic() -> None:
    # umap-learn's seed does not fix a fit of repeated rows (lmcinnes/umap#1277): each distinct row is embedded once
    rng = np.random.default_rng(2)
    distinct = rng.standard_normal((12, 8))
    points = distinct[rng.integers(0, 12, size=120)]
    first = umap_embedding(points, seed=42, n_neighbors=5)
    np.testing.assert_array_equal(umap_embedding(points, seed=42, n_neighbors=5), first)
    same = (points[:, None, :] == points[None, :, :]).all(-1)
    assert np.array_equal(same, (first[:, None, :] == first[None, :, :]).all(-1))  # equal rows, equal points


@pytest.mark.slow
def test_umap_embedding_leaves_torchs_thread_count_alone() -> None:
    # a seeded umap-learn fit set torch's (OpenMP's) threads from 1 to the core count, so a suite or noise floor
    # trained after formation in the same process summed its floats differently from one trained before it
    points = np.random.default_rng(1).standard_normal((40, 8))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        umap_embedding(points, seed=0, n_neighbors=5)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


class _RecordingRows:
    """An ``[N, d]`` analysis set that records every row request (like a streamed view computing its batches)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.requests = data, data.shape, []

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.requests.append(np.asarray(rows))
        return self.data[rows]


def test_gather_reads_in_ascending_blocks_straight_into_the_result() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 6)).astype(np.float32)
    indices = rng.integers(0, 500, size=(40, 7))
    source = _RecordingRows(data)
    got = fm._gather(source, indices, block=32)
    np.testing.assert_array_equal(got, data[indices])  # the same values as one fancy-indexing read
    assert max(len(r) for r in source.requests) <= 32 and sum(len(r) for r in source.requests) == indices.size
    read = np.concatenate(source.requests)
    assert (np.diff(read) >= 0).all()  # ascending across blocks: a streamed view computes each batch once
    np.testing.assert_array_equal(activation_sets([data], indices)[0], data[indices])
