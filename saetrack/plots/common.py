"""The figure registry: every figure the project writes, its file name, and how it is saved.

File names derive from the paper's figure numbers (``fig05_progress_measure``); figures that are not
in the paper carry an ``S`` number (``figS01_lm_loss``). Figures are written as PNG and PDF under
``figures/<preset>/``, atomically, with the Agg backend (no screen needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from saetrack import paths, store

__all__ = [
    "FIGURES",
    "figure_path",
    "save_figure",
    "save_html",
]


#: Figure key -> (file stem, what it shows). Keys are the figure numbers of the paper (or S-numbers).
FIGURES: dict[str, tuple[str, str]] = {
    "S01": ("figS01_lm_loss", "Training and held-out loss of the model suite, with the unigram entropy"),
    "S02": ("figS02_chain_training", "Training loss curves of every SAE link"),
    "S03": ("figS03_chain_quality", "Quality metrics of every link against training step"),
    "S04": ("figS04_convergence", "Recurrent link vs from-scratch SAE: loss against training tokens"),
    "S05": ("figS05_feature_agreement", "Feature agreement: chain vs independent SAEs, and index stability"),
    "02": ("fig02_feature_patterns", "Feature evolution patterns: maintaining, shifting, grouping"),
    "03": ("fig03_feature_regions", "Feature regions with activation levels and faithful regions (toy 2-D)"),
    "04": ("fig04_umap", "UMAP of activation sets of token- and concept-level features across checkpoints"),
    "05": ("fig05_progress_measure", "Progress measure in activation and feature space"),
    "05p": ("fig05p_progress_measure_phases", "Progress measure (cosine) with the phases detected in notebook 04"),
    "05d": ("fig05d_progress_terms", "Progress measure split into within-set similarity and random baseline"),
    "05a": ("fig05a_anchor_control", "Anchor-swap control: within-set similarity of top-k sets chosen at 3 anchors"),
    "05n": ("fig05n_normalised_progress", "Baseline-normalised progress measure (S - B) / (1 - B) beside Eq. 14"),
    "06a": ("fig06a_decoder_cosine_distribution", "Decoder cosine to final: distribution per checkpoint"),
    "06b": ("fig06b_decoder_cosine_features", "Decoder cosine to final: sampled features"),
    "07": ("fig07_trajectories", "Feature trajectories of decoder vectors"),
    "07n": ("fig07n_trajectory_null", "Feature trajectories against random walks with the same step sizes"),
    "08": ("fig08_progress_jaccard", "Progress measure with Jaccard and weighted Jaccard similarity"),
    "09": ("fig09_scale_umap_a", "Scale study, smaller size: UMAP of activation sets (paper: Pythia-160m)"),
    "10": ("fig10_scale_progress_a", "Scale study, smaller size: progress measure (paper: Pythia-160m)"),
    "11": ("fig11_scale_decoder_cosine_a", "Scale study, smaller size: decoder cosine to final (paper: Pythia-160m)"),
    "12": ("fig12_scale_trajectories_a", "Scale study, smaller size: feature trajectories (paper: Pythia-160m)"),
    "13": ("fig13_scale_umap_b", "Scale study, other size: UMAP of activation sets (paper: Pythia-1.4b)"),
    "14": ("fig14_scale_progress_b", "Scale study, other size: progress measure (paper: Pythia-1.4b)"),
    "15": ("fig15_scale_decoder_cosine_b", "Scale study, other size: decoder cosine to final (paper: Pythia-1.4b)"),
    "16": ("fig16_scale_trajectories_b", "Scale study, other size: feature trajectories (paper: Pythia-1.4b)"),
    "S06": ("figS06_scale_summary", "Cross-scale summary of progress and drift"),
    "S08": ("figS08_seed_study", "Phases over model and chain seeds and the warm-up control: curves, segment counts"),
    "S07": ("figS07_baseline_formation", "Formation without the chain: token/concept features of from-scratch SAEs"),
    # the crosscoder of Ge et al. 2025 beside the chain (issue 14, notebook 06): that paper's measures, not SAE-Track's
    "X01": ("figX01_crosscoder_quality", "Crosscoder vs chain links at equal size: explained variance, L0, dead"),
    "X02": ("figX02_decoder_norm_heatmap", "Crosscoder decoder norms, absolute and row-normalised, by emergence"),
    "X03": ("figX03_emergence_histogram", "Crosscoder emergence histograms at four fractions; share at first vs nulls"),
    "X04": ("figX04_feature_evolution", "Decaying initialisation features; decoder cosine to final (turning point)"),
    "X05": ("figX05_statistical_learning", "Unigram/bigram KL of the predictions, loss against n-gram entropies"),
    "X06": ("figX06_emergence_vs_formation", "Crosscoder emergence vs chain formation of matched features"),
    "X07": ("figX07_phase_timeline", "Phase boundaries of every perspective on one timeline, with agreement"),
    "X08": ("figX08_crosscoder_chain_matching", "Hungarian-matched decoder cosine, crosscoder vs chain link"),
    "X09": ("figX09_crosscoder_controls", "Decoder norms of the crosscoder and its controls (nulls, centred)"),
    "X10": ("figX10_crosscoder_settling", "Median normalised decoder norm (the dip) and each crosscoder's settling"),
}


def figure_path(preset: str, key: str, suffix: str = ".png", prefix: str = "") -> Path:
    """Path of figure ``key`` of ``preset`` (``prefix`` distinguishes per-size figures of the scale study)."""
    if key not in FIGURES:
        raise KeyError(f"unknown figure {key!r}; known: {sorted(FIGURES)}")
    return paths.figures_dir(preset) / f"{prefix}{FIGURES[key][0]}{suffix}"


def save_figure(fig: Figure, preset: str, key: str, prefix: str = "", dpi: int = 150) -> list[Path]:
    """Write ``fig`` as PNG and PDF to ``figures/<preset>/`` atomically and return the paths."""
    written = []
    for suffix in (".png", ".pdf"):
        target = figure_path(preset, key, suffix, prefix)
        with store.atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written


def save_html(html: str, preset: str, key: str) -> Path:
    """Write an HTML version of figure ``key`` (e.g. the Fig. 2 table) next to its PNG, atomically."""
    target = figure_path(preset, key, ".html")
    with store.atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return target
