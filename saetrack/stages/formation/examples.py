"""Fig. 2's examples (Sec. 4.2): features picked by rule per pattern category, with checkable cells.

Rows: one category each of :data:`saetrack.analysis.patterns.FIG2_RULES` (maintaining, shifting token->token,
shifting token->concept, grouping noise->coherent), the clearest instance by the stated score
(:func:`saetrack.analysis.patterns.pick_fig2_examples`). Columns: the checkpoints chosen from the phases
(:func:`saetrack.analysis.formation.choose_checkpoints`). Every cell records what a reader needs to check the label:
the label at that checkpoint (Def. 4.1-4.2), the dominant token and its count among the top-k datapoints, the top
activation, and the top contexts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from saetrack.analysis import features as fx
from saetrack.analysis.patterns import pick_fig2_examples

__all__ = ["example_cell", "pattern_examples"]


def example_cell(
    tokenizer: Any,
    analysis_tokens: np.ndarray,
    values: np.ndarray,
    indices: np.ndarray,
    label: str,
    n_contexts: int,
) -> dict[str, Any]:
    """One Fig. 2 cell of one feature at one checkpoint from its top-k ``values`` / ``indices`` ``[k]``.

    Records the label (Def. 4.1-4.2), the dominant token among the active datapoints (id, text, count), the number
    of active datapoints, ``top_k``, the top activation and the first ``n_contexts`` contexts («tok» marked).
    """
    values, indices = np.asarray(values), np.asarray(indices)
    active = indices[values > 0]
    tokens = np.asarray(analysis_tokens).reshape(-1)[active]
    dominant, count = -1, 0
    if tokens.size:
        ids, counts = np.unique(tokens, return_counts=True)
        dominant, count = int(ids[int(np.argmax(counts))]), int(counts.max())
    return {
        "label": str(label),
        "dominant": dominant,
        "dominant_text": tokenizer.decode([dominant]) if dominant >= 0 else "",
        "count": count,
        "n_active": int(active.size),
        "top_k": int(values.size),
        "top_activation": float(values[0]) if values.size else 0.0,
        "contexts": [fx.render_context(tokenizer, analysis_tokens, int(i))[0] for i in active[:n_contexts]],
    }


def pattern_examples(
    tokenizer: Any,
    analysis_tokens: np.ndarray,
    tables: Any,
    subs: np.ndarray,
    patterns: np.ndarray,
    live: np.ndarray,
    progress: np.ndarray,
    columns: Sequence[dict[str, Any]],
    n_per_category: int,
    n_contexts: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Fig. 2's rows: per category, the clearest live feature(s) by rule, with a cell per chosen checkpoint.

    ``tables`` holds the chain's ``labels`` ``[T, F]``, ``shares`` ``[T, F]``, ``top_values`` / ``top_indices``
    ``[T, F, k]``; ``subs`` / ``patterns`` are ``[F]``; ``progress`` is the activation-space M_i(t) ``[T, L]`` of
    the ``live`` features; ``columns`` are the chosen checkpoints (``position``, ``step``, ``phase``, ``why``).
    Each row: ``{pattern, category, sub_pattern, rule, score, feature, columns: [[step, contexts]], cells}``.
    """
    picks = pick_fig2_examples(subs[live], tables.shares[:, live], progress, n_per_category, seed)
    rows = []
    for pick in picks:
        feature = int(live[pick["index"]])
        cells = []
        for column in columns:
            p = int(column["position"])
            cell = example_cell(
                tokenizer,
                analysis_tokens,
                tables.top_values[p, feature],
                tables.top_indices[p, feature],
                tables.labels[p, feature],
                n_contexts,
            )
            cells.append({"step": int(column["step"]), "phase": column["phase"], **cell})
        rows.append(
            {
                "pattern": str(patterns[feature]),
                "category": pick["category"],
                "sub_pattern": str(subs[feature]),
                "rule": pick["rule"],
                "score": pick["score"],
                "feature": feature,
                "columns": [[c["step"], c["contexts"]] for c in cells],
                "cells": cells,
            }
        )
    return rows
