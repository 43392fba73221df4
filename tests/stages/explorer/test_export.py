"""The Neuronpedia batch export of one link: the written JSON holds exactly the given features, in the keys and layout
that SAEDashboard's loader and the Neuronpedia converters read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saetrack.stages.explorer.export import (
    ABSENT_FEATURE_FIELDS,
    FEATURE_KEYS,
    ExportContext,
    ExportFeature,
    export_link,
)

_NUMBERS = {"type": "array", "items": {"type": "number"}}
_INTS = {"type": "array", "items": {"type": "integer"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
#: The batch format as its readers take it (neither project publishes a schema; this one is written from SAEDashboard
#: 0.8.0's ``NeuronpediaDashboardBatch/Feature/Activation`` constructors, which reject unknown keys, and from the keys
#: its ``neuronpedia_export`` and Neuronpedia's ``convert-saedashboard-to-neuronpedia-export.py`` read by ``[...]``).
ACTIVATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"],
    "additionalProperties": False,
    "properties": {
        "bin_min": {"type": "number"},
        "bin_max": {"type": "number"},
        "bin_contains": {"type": "number"},
        "tokens": {**_STRINGS, "minItems": 1},
        "values": {**_NUMBERS, "minItems": 1},
        "qualifying_token_index": {"type": "integer", "minimum": 0},
        "dfa_values": _NUMBERS,
        "dfa_maxValue": {"type": "number"},
        "dfa_targetIndex": {"type": "integer"},
    },
}
FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(FEATURE_KEYS),
    "additionalProperties": False,
    "properties": {
        **{k: _INTS for k in FEATURE_KEYS if k.endswith("_indices")},
        **{k: _NUMBERS for k in ABSENT_FEATURE_FIELDS if not k.endswith(("_indices", "_str"))},
        "neg_str": _STRINGS,
        "pos_str": _STRINGS,
        "feature_index": {"type": "integer", "minimum": 0},
        "frac_nonzero": {"type": "number", "minimum": 0, "maximum": 1},
        "n_prompts_total": {"type": "integer"},
        "n_tokens_in_prompt": {"type": "integer"},
        "dataset": {"type": "string"},
        "activations": {"type": "array", "items": ACTIVATION_SCHEMA},
    },
}
BATCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model_id", "layer", "sae_set", "sae_id_suffix", "features"],
    "additionalProperties": False,
    "properties": {
        "model_id": {"type": "string"},
        "layer": {"type": "integer"},
        "sae_set": {"type": "string"},
        "sae_id_suffix": {"type": ["string", "null"]},
        "features": {"type": "array", "items": FEATURE_SCHEMA},
    },
}
LINK = {"model_id": "pythia-70m", "layer": 3, "sae_set": "saetrack-res", "link_id": "step1000"}


def _features(n: int = 5, seed: int = 0) -> list[ExportFeature]:
    """``n`` synthetic features with 0..2 contexts of 11 tokens (8 before the activating token, 2 after), one cut
    short at the context start, and one feature without a recorded frequency."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        contexts = []
        for c in range(i % 3):
            before = 8 if c == 0 else 3
            tokens = [f" tok{i}_{c}_{k}" for k in range(before + 3)]
            values = [round(float(v), 4) for v in rng.uniform(0.0, 2.0, size=len(tokens))]
            contexts.append(ExportContext(tokens=tokens, values=values, target=before))
        top = max((max(c.values) for c in contexts), default=0.0)
        freq = None if i == 4 else float(rng.uniform(0.0, 0.1))
        out.append(ExportFeature(index=10 * i + 7, frac_nonzero=freq, max_activation=top, contexts=contexts))
    return out


def _load(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in paths]


def test_written_json_holds_exactly_the_given_features(tmp_path: Path) -> None:
    features = _features()
    paths = export_link(features, tmp_path / "link", features_per_batch=2, dataset="sotu", **LINK)
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    batches = _load(paths)
    for batch in batches:
        assert batch["model_id"] == "pythia-70m" and batch["layer"] == 3
        assert batch["sae_set"] == "saetrack-res" and batch["sae_id_suffix"] == "step1000"
    written = [f for b in batches for f in b["features"]]
    assert [f["feature_index"] for f in written] == [7, 17, 27, 37, 47]
    for ours, theirs in zip(features, written, strict=True):
        assert list(theirs) == list(FEATURE_KEYS)
        assert theirs["frac_nonzero"] == (0.0 if ours.frac_nonzero is None else ours.frac_nonzero)
        assert theirs["dataset"] == "sotu"
        assert len(theirs["activations"]) == len(ours.contexts)
        for context, act in zip(ours.contexts, theirs["activations"], strict=True):
            assert act["tokens"] == list(context.tokens)
            assert act["values"] == list(context.values)
            assert act["qualifying_token_index"] == context.target
            assert (act["bin_min"], act["bin_max"], act["bin_contains"]) == (-1, ours.max_activation, -1)
        assert all(theirs[k] == [] for k in ABSENT_FEATURE_FIELDS)
    # the short context keeps its own target: 3 tokens before the activating one
    assert written[2]["activations"][1]["qualifying_token_index"] == 3
    assert written[2]["activations"][1]["tokens"][3] == " tok2_1_3"


def test_rerun_replaces_the_batches_of_the_folder(tmp_path: Path) -> None:
    features = _features()
    export_link(features, tmp_path, features_per_batch=1, **LINK)
    paths = export_link(features[:2], tmp_path, features_per_batch=1, **{**LINK, "link_id": None})
    assert sorted(p.name for p in tmp_path.glob("batch-*.json")) == ["batch-0.json", "batch-1.json"]
    assert [b["sae_id_suffix"] for b in _load(paths)] == [None, None]


def test_inputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="as many values as tokens"):
        ExportContext(tokens=["a", "b"], values=[1.0], target=0)
    with pytest.raises(ValueError, match="outside the window"):
        ExportContext(tokens=["a", "b"], values=[1.0, 2.0], target=2)
    with pytest.raises(ValueError, match="finite"):
        ExportContext(tokens=["a"], values=[float("nan")], target=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ExportFeature(index=0, frac_nonzero=float("nan"), max_activation=1.0)
    twice = [ExportFeature(index=1, frac_nonzero=0.1, max_activation=1.0)] * 2
    with pytest.raises(ValueError, match="unique"):
        export_link(twice, tmp_path, **LINK)


def test_batches_match_the_schema_of_their_readers(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (it comes with nbformat)")
    paths = export_link(_features(7, seed=1), tmp_path, features_per_batch=3, **LINK)
    validator = jsonschema.Draft202012Validator(BATCH_SCHEMA)
    for batch in _load(paths):
        assert not list(validator.iter_errors(batch))
    bad = _load(paths)[0]
    bad["features"][0]["max_act"] = 1.0  # a key SAEDashboard's loader would reject
    assert list(validator.iter_errors(bad))


def test_saedashboard_loader_round_trips_the_batches(tmp_path: Path) -> None:
    loader = pytest.importorskip(
        "sae_dashboard.neuronpedia.neuronpedia_dashboard",
        reason="sae-dashboard is not installed: 0.8.0 pins transformers<4.57 and transformer-lens<3, which conflict "
        "with requirements.txt (checked once in a separate venv, see saetrack/stages/explorer/export.py)",
    )
    paths = export_link(_features(), tmp_path, features_per_batch=2, **LINK)
    for batch in _load(paths):
        assert loader.NeuronpediaDashboardBatch(**batch).to_dict() == batch
