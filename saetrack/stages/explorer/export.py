"""Export of one chain link's features as SAEDashboard's Neuronpedia batch JSON (``batch-<n>.json``).

**The format.** SAEDashboard's ``NeuronpediaRunner`` (pip ``sae-dashboard``, repo ``jbloomAus/SAEDashboard``) writes
one folder per SAE holding ``batch-0.json``, ``batch-1.json``, ...; each is one
``sae_dashboard.neuronpedia.neuronpedia_dashboard.NeuronpediaDashboardBatch`` (``to_dict()``):
``{model_id, layer, sae_set, sae_id_suffix, features: [...]}``, each feature a ``NeuronpediaDashboardFeature`` whose
``activations`` are ``NeuronpediaDashboardActivation`` dicts. Four maintained readers take these files: SAEDashboard's
own loader ``NeuronpediaDashboardBatch(**json)`` (it rejects unknown keys), its ``neuronpedia_export`` module and
Neuronpedia's ``utils/neuronpedia-utils/.../convert-saedashboard-to-neuronpedia-export.py`` (both turn the batches
into Neuronpedia's bulk-import layout, and read every feature key below by ``[...]``, so none may be missing), and
Neuronpedia's ``/manual-dashboard`` page (one element of ``features`` pasted in). Neither project publishes a JSON
Schema for it, so this module writes exactly the keys of SAEDashboard 0.8.0's ``to_dict()``, no others.

One folder per link: ``out_dir`` gets the batches of one SAE of the chain. The converters name the Neuronpedia source
``<layer>-<source set>__<sae_id_suffix>`` (layer and set from their command line; Neuronpedia's script also reads the
batch's ``layer``, so the two must agree); SAEDashboard documents ``sae_id_suffix`` for "additional l0s, training
steps", so a link's checkpoint (e.g. ``step1000``) goes there and feature ``i`` keeps its index at every link.

**Mapping** (ours -> theirs):

- ``ExportFeature.index`` -> ``feature_index``.
- ``frac_nonzero`` -> ``frac_nonzero`` (ours: the share of the link's training tokens on which the feature fires;
  SAEDashboard's: the share of its dashboard prompt tokens). Unrecorded (``None``) -> 0, what SAEDashboard's converter
  writes when its histogram has no frequency.
- each ``ExportContext`` -> one entry of ``activations``: ``tokens`` and ``values`` (the feature's activation on each
  token of the window, as given), ``qualifying_token_index`` = the activating token's position in the window, and
  the bin of SAEDashboard's "TOP ACTIVATIONS" group: ``bin_min = -1``, ``bin_max = max_activation``,
  ``bin_contains = -1`` (its converter's values for that group). ``dfa_*`` are left out (optional: ``to_dict``
  writes them only when set). Neuronpedia recomputes each example's ``maxValue`` and the feature's ``maxActApprox``
  from ``values``.
- ``n_prompts_total``, ``n_tokens_in_prompt``, ``dataset``: the analysis set the contexts come from (caller's).

**Not computed here, written as the format's "absent"** (the empty list: SAEDashboard's constructor default and the
``@default([])`` of Neuronpedia's database columns): the logit attributions
``pos_str``/``pos_values``/``neg_str``/``neg_values`` and their histogram ``logits_hist_data_bar_*``, the activation
density histogram ``freq_hist_data_bar_*``, ``neuron_alignment_*``, ``correlated_neurons_*``,
``correlated_features_*`` (SAEDashboard fills these from activation correlations, not decoder cosines),
``decoder_weights_dist`` (attention-head SAEs only) and ``vector`` (steering vectors of vector sources).

**Decoder-cosine neighbours are not exported**: the batch format has no field for them (Neuronpedia's ``topkCosSim*``
columns exist only after conversion, and both converters set them to ``[]``), and putting them under
``correlated_features_*`` would label them as activation correlations.

**Validation.** ``sae-dashboard`` cannot join our environment (0.8.0 needs ``transformers<4.57`` and
``transformer-lens<3``; ``pip install --dry-run sae-dashboard`` here would install transformers 4.56.2,
transformer-lens 2.17.0, torch 2.14.1 and numpy 1.26.4 over the pins), so its loader was run once in a throwaway
venv (``python3.11 -m venv /tmp/sdvenv; pip install --no-deps sae-dashboard==0.8.0; pip install numpy orjson
"typer<0.13" "click<8.2" python-dotenv jsonschema pytest``; ``neuronpedia_dashboard`` needs only numpy):
``tests/stages/explorer/test_export.py`` passed there in full (5 tests, the loader round trip
``NeuronpediaDashboardBatch(**json).to_dict() == json`` included), and a synthetic link written here was converted
without error, rows checked, by SAEDashboard's ``neuronpedia_export.export_neuronpedia_dashboards`` (repo HEAD; not
in the 0.8.0 wheel) and by Neuronpedia's ``convert-saedashboard-to-neuronpedia-export.py`` run as its CLI. In our
environment the test checks the files against a JSON Schema written from those readers, with ``jsonschema``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ABSENT_FEATURE_FIELDS",
    "FEATURES_PER_BATCH",
    "FEATURE_KEYS",
    "TOP_BIN",
    "ExportContext",
    "ExportFeature",
    "batch_dict",
    "export_link",
    "feature_dict",
]

#: Features per ``batch-<n>.json`` (SAEDashboard's runner writes a batch per ``n_features_at_a_time``); 128 features of
#: 25 contexts of 11 tokens with unrounded float32 values make a file of about 1.5 MB.
FEATURES_PER_BATCH = 128
#: ``bin_min`` and ``bin_contains`` of SAEDashboard's "TOP ACTIVATIONS" group (its ``bin_max`` is the maximum).
TOP_BIN = -1
#: The keys of a feature, in the order of SAEDashboard 0.8.0's ``NeuronpediaDashboardFeature.to_dict()``.
FEATURE_KEYS = (
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "n_prompts_total",
    "n_tokens_in_prompt",
    "dataset",
    "decoder_weights_dist",
    "activations",
    "vector",
)
#: Of those, the ones we do not compute, written as the format's "absent": the empty list.
ABSENT_FEATURE_FIELDS = tuple(
    key
    for key in FEATURE_KEYS
    if key not in {"feature_index", "frac_nonzero", "n_prompts_total", "n_tokens_in_prompt", "dataset", "activations"}
)


@dataclass(frozen=True)
class ExportContext:
    """One top datapoint of a feature: the window's token strings, the feature's activation on each, and the position
    of the activating token in the window (8 tokens before it and 2 after, fewer where the context ends)."""

    tokens: Sequence[str]
    values: Sequence[float]
    target: int

    def __post_init__(self) -> None:
        if not self.tokens or len(self.tokens) != len(self.values):
            raise ValueError(
                f"a context needs as many values as tokens (>= 1): {len(self.tokens)} tokens, {len(self.values)} values"
            )
        if not 0 <= self.target < len(self.tokens):
            raise ValueError(f"target {self.target} lies outside the window of {len(self.tokens)} tokens")
        if not all(math.isfinite(float(v)) for v in self.values):
            raise ValueError("context values must be finite")


@dataclass(frozen=True)
class ExportFeature:
    """What the chain knows of feature ``index`` at one link: its firing frequency, its largest activation over the
    analysis set, and its top contexts (largest first). ``frac_nonzero`` is ``None`` where the link's frequency was
    not recorded; it is then written as 0, SAEDashboard's value when it has no frequency."""

    index: int
    frac_nonzero: float | None
    max_activation: float
    contexts: Sequence[ExportContext] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"feature index must be >= 0, got {self.index}")
        if self.frac_nonzero is not None and not 0.0 <= self.frac_nonzero <= 1.0:
            raise ValueError(f"frac_nonzero must lie in [0, 1], got {self.frac_nonzero}")
        if not math.isfinite(self.max_activation):
            raise ValueError("max_activation must be finite")


def _activation_dict(context: ExportContext, max_activation: float) -> dict[str, Any]:
    """One context as a ``NeuronpediaDashboardActivation.to_dict()`` of the top-activations group."""
    return {
        "bin_min": TOP_BIN,
        "bin_max": float(max_activation),
        "bin_contains": TOP_BIN,
        "tokens": [str(t) for t in context.tokens],
        "values": [float(v) for v in context.values],
        "qualifying_token_index": int(context.target),
    }


def feature_dict(
    feature: ExportFeature, *, dataset: str = "", n_prompts_total: int = 0, n_tokens_in_prompt: int = 0
) -> dict[str, Any]:
    """One feature as ``NeuronpediaDashboardFeature.to_dict()``: the keys in its order, our index, frequency and
    contexts filled in, the fields we do not compute (:data:`ABSENT_FEATURE_FIELDS`) as empty lists."""
    filled: dict[str, Any] = {
        "feature_index": int(feature.index),
        "frac_nonzero": 0.0 if feature.frac_nonzero is None else float(feature.frac_nonzero),
        "n_prompts_total": int(n_prompts_total),
        "n_tokens_in_prompt": int(n_tokens_in_prompt),
        "dataset": str(dataset),
        "activations": [_activation_dict(c, feature.max_activation) for c in feature.contexts],
    }
    return {key: filled[key] if key in filled else [] for key in FEATURE_KEYS}


def batch_dict(
    features: Sequence[dict[str, Any]], *, model_id: str, layer: int, sae_set: str, sae_id_suffix: str | None
) -> dict[str, Any]:
    """One ``batch-<n>.json`` as ``NeuronpediaDashboardBatch.to_dict()``: the SAE's identity and its features."""
    return {
        "model_id": str(model_id),
        "layer": int(layer),
        "sae_set": str(sae_set),
        "sae_id_suffix": sae_id_suffix,
        "features": list(features),
    }


def export_link(
    features: Sequence[ExportFeature],
    out_dir: Path,
    *,
    model_id: str,
    layer: int,
    sae_set: str,
    link_id: str | None = None,
    dataset: str = "",
    n_prompts_total: int = 0,
    n_tokens_in_prompt: int = 0,
    features_per_batch: int = FEATURES_PER_BATCH,
) -> list[Path]:
    """Write one link's features to ``out_dir/batch-<n>.json`` (SAEDashboard's Neuronpedia batches, ``n`` from 0,
    ``features_per_batch`` features each, in the given order) and return the files' paths.

    ``model_id``, ``layer`` and ``sae_set`` name the SAE as Neuronpedia does; ``link_id`` (e.g. ``"step1000"``)
    becomes ``sae_id_suffix``, telling the chain's links apart. ``dataset``, ``n_prompts_total`` and
    ``n_tokens_in_prompt`` describe the analysis set the contexts were drawn from. Feature indices must be unique.
    Batches already in ``out_dir`` are removed first (the readers take every ``batch-*`` file of the folder).
    """
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be >= 1, got {features_per_batch}")
    indices = [f.index for f in features]
    if len(set(indices)) != len(indices):
        raise ValueError("feature indices must be unique within a link")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("batch-*.json"):  # the readers take every batch-* file in the folder
        stale.unlink()
    paths = []
    for n, start in enumerate(range(0, len(features), features_per_batch)):
        chunk = [
            feature_dict(f, dataset=dataset, n_prompts_total=n_prompts_total, n_tokens_in_prompt=n_tokens_in_prompt)
            for f in features[start : start + features_per_batch]
        ]
        batch = batch_dict(chunk, model_id=model_id, layer=layer, sae_set=sae_set, sae_id_suffix=link_id)
        path = out_dir / f"batch-{n}.json"
        path.write_text(json.dumps(batch, allow_nan=False), encoding="utf-8")
        paths.append(path)
    return paths
