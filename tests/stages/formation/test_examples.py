"""Fig. 2's cells and rows (stages.formation.examples) on a hand-made word-level vocabulary with known answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from saetrack.stages.formation.examples import example_cell, pattern_examples

WORDS = ["[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog"]
# 2 contexts of 6 tokens; flat rows 0..11
TOKENS = np.array([[1, 2, 3, 4, 1, 5], [6, 7, 3, 4, 1, 2]])


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_example_cell_counts_the_dominant_token_and_keeps_the_top_activation() -> None:
    # rows 0, 4, 10 are "the"; row 2 is "sat"; the last entry is inactive (value 0)
    values = np.array([3.5, 2.0, 1.5, 1.0, 0.0])
    indices = np.array([0, 4, 2, 10, 7])
    cell = example_cell(_tokenizer(), TOKENS, values, indices, "token", n_contexts=2)
    assert cell["dominant_text"] == "the" and cell["dominant"] == 1
    assert (cell["count"], cell["n_active"], cell["top_k"]) == (3, 4, 5)
    assert cell["top_activation"] == 3.5 and cell["label"] == "token"
    assert cell["contexts"] == ["«the» cat sat", "the cat sat on «the» mat"]
    empty = example_cell(_tokenizer(), TOKENS, np.zeros(3), np.array([0, 1, 2]), "inactive", n_contexts=2)
    assert (empty["dominant"], empty["count"], empty["n_active"], empty["contexts"]) == (-1, 0, 0, [])


def test_pattern_examples_one_row_per_category_with_a_cell_per_column() -> None:
    # 2 checkpoints, 2 features, k = 3: feature 0 maintains "the"; feature 1 shifts "sat" -> "the"
    top_indices = np.array([[[0, 4, 10], [2, 8, 2]], [[0, 4, 10], [0, 4, 1]]])
    top_values = np.ones((2, 2, 3))
    tables = SimpleNamespace(
        labels=np.array([["token", "token"], ["token", "token"]]),
        shares=np.array([[1.0, 1.0], [1.0, 2 / 3]]),
        top_values=top_values,
        top_indices=top_indices,
    )
    subs = np.array(["maintaining: token->same token", "shifting: token->token"])
    patterns = np.array(["maintaining", "shifting"])
    columns = [
        {"position": 0, "step": 0, "phase": "Initialization & Warmup"},
        {"position": 1, "step": 9, "phase": None},
    ]
    rows = pattern_examples(
        _tokenizer(), TOKENS, tables, subs, patterns, np.array([0, 1]), np.array([[0.1, 0.2], [0.5, 0.6]]),
        columns, n_per_category=1, n_contexts=1, seed=0,
    )  # fmt: skip
    assert [(r["category"], r["feature"]) for r in rows] == [("maintaining", 0), ("shifting token->token", 1)]
    shifting = rows[1]
    assert shifting["pattern"] == "shifting" and shifting["sub_pattern"] == "shifting: token->token"
    assert [c["dominant_text"] for c in shifting["cells"]] == ["sat", "the"]
    assert [c["count"] for c in shifting["cells"]] == [3, 2]
    assert shifting["cells"][0]["phase"] == "Initialization & Warmup"
    assert shifting["columns"] == [[0, ["the cat «sat» on the"]], [9, ["«the» cat sat"]]]
    assert shifting["score"] == 2 / 3
