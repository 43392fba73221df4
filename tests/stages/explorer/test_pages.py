"""The explorer's payloads on a hand-built run (4 checkpoints, 5 features): every value is known."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from saetrack.analysis.phases import PHASE_NAMES
from saetrack.config import get_preset
from saetrack.stages.explorer.arrays import CrosscoderArrays, RunArrays
from saetrack.stages.explorer.contexts import SHADES, ContextWindows
from saetrack.stages.explorer.pages import (
    SHADE_ALPHABET,
    checkpoint_page,
    feature_page,
    index_table,
    phase_of,
    rounded,
    run_description,
    search_text,
    shade_string,
    window_ids,
)

NAN = np.nan
STEPS = [0, 10, 20, 30]
OFFSETS = np.array([-1, 0, 1])
#: Analysis token ids ``[4 contexts, 5 tokens]``: row r holds token 100 + r.
TOKENS = np.arange(100, 120).reshape(4, 5)


def _crosscoder() -> CrosscoderArrays:
    return CrosscoderArrays(
        steps=np.array([0, 15, 30]),
        norms=np.array([[0.1, 0.5, 0.9], [0.0, 0.0, 0.01], [0.3, 0.6, 0.61234]]),
        emergence_step=np.array([15, -1, 0]),
        match=np.array([2, -1, 0, -1, 1]),
        match_cosine=np.array([0.9, NAN, 0.4, NAN, 0.75]),
        threshold=0.7,
        final_step=30,
    )


def _arrays(crosscoder: bool = True) -> RunArrays:
    labels = np.array(
        [
            ["token", "inactive", "concept", "inactive", "token"],
            ["token", "concept", "concept", "inactive", "token"],
            ["token", "concept", "token", "inactive", "inactive"],
            ["concept", "concept", "token", "inactive", "token"],
        ]
    )
    return RunArrays(
        preset="smoke",
        steps=np.array(STEPS),
        labels=labels,
        dominant=np.array([[5, -1, 7, -1, 9], [5, 6, 7, -1, 9], [5, 6, 8, -1, -1], [4, 6, 8, -1, 9]]),
        shares=np.array([[0.5, NAN, 0.2, NAN, 1.0]] * 4),
        live=np.array([True, True, True, False, True]),
        patterns=np.array(["token", "shifting", "concept", "excluded", "token"]),
        sub_patterns=np.array(["token", "shifting token->concept", "concept", "excluded", "token"]),
        frequency=np.array(
            [
                [0.1, 0.0, 0.2, 0.01, 0.05],  # feature 3 fired although its label is inactive: frequency wins
                [NAN] * 5,  # not recorded: the label decides
                [0.1, 0.3, 0.2, 0.0, 0.0],
                [0.12345678, 0.3, 0.2, 0.0, 0.01],
            ]
        ),
        to_final=np.array(
            [
                [0.2, 0.1, 0.3, 0.0, -0.1],
                [0.5, 0.3, 0.4, 0.1, 0.2],
                [0.8, 0.7, 0.9, 0.2, 0.6],
                [1.0, 1.0, 1.0, 1.0, 1.0],
            ]
        ),
        adjacent=np.array([[0.3, 0.2, 0.5, 0.9, 0.1], [0.6, 0.8, 0.7, 0.95, 0.4], [0.8, 0.7, 0.9, 0.99, 0.6]]),
        formation_step=np.array([10, 20, -1, -1, 30]),
        progress=np.array([[0.0, 0.1, 0.2, NAN, 0.3]] * 4),
        baseline=np.array([0.01, 0.02, 0.03, 0.04]),
        noise_to_final=np.array([[0.99, 0.98, 0.97, NAN, 0.96], [0.98, 0.97, 0.96, NAN, 0.95]]),
        phases={"emergent": 1, "convergent": 3},
        link_metrics=[{"mse": 0.123456, "l0": 12.0 + t} for t in range(4)],
        dead_fraction=np.array([0.5, 0.4, 0.2, 0.2]),
        nearest=np.array([[1, 2], [0, 2], [1, 0], [4, 0], [3, 1]]),
        nearest_cosine=np.array([[0.5, 0.25], [0.5, 0.1], [0.3, 0.25], [0.2, 0.1], [0.2, 0.15]]),
        crosscoder=_crosscoder() if crosscoder else None,
    )


def _windows() -> ContextWindows:
    """Two contexts per checkpoint; feature 0's rows are chosen, feature 3 has none, feature 1 one per checkpoint."""
    rows = np.full((4, 5, 2), -1)
    rows[:, 0] = [[6, -1], [6, 12], [12, 0], [19, 6]]
    rows[:, 1, 0] = [1, 2, 3, 4]
    rows[:, 2] = [[7, 8], [7, 8], [9, 10], [9, 11]]
    rows[:, 4] = [[13, 14], [13, 14], [15, 16], [17, 18]]
    rng = np.random.default_rng(0)
    values = np.where(rows >= 0, np.sort(rng.uniform(1, 5, size=rows.shape), axis=-1)[..., ::-1], 0.0)
    shading = rng.integers(0, SHADES + 1, size=(4, 5, 2, 3)).astype(np.uint8)
    shading[rows < 0] = 255
    return ContextWindows(rows=rows, values=values.astype(np.float32), shading=shading, offsets=OFFSETS)


def _token_text(token: int) -> str:
    return "∅" if token < 0 else f"tok{token}"


def test_rounded() -> None:
    assert rounded(np.nan) is None and rounded(np.inf) is None and rounded(-np.inf) is None
    assert rounded(3.14159265) == 3.142
    assert rounded(123456.0) == 123500.0
    assert rounded(0.000123456) == 0.0001235
    assert rounded(2.71828, 2) == 2.7
    assert rounded(np.float32(0.5)) == 0.5 and isinstance(rounded(7), float)
    assert rounded(np.array([[1.23456, np.inf], [np.nan, 2]])) == [[1.235, None], [None, 2.0]]
    assert rounded(np.zeros(0)) == []


def test_phase_of() -> None:
    phases = {"emergent": 1, "convergent": 3}
    assert phase_of(0, None) is None
    assert [phase_of(t, phases) for t in range(5)] == [PHASE_NAMES[0], PHASE_NAMES[1], PHASE_NAMES[1]] + [
        PHASE_NAMES[2]
    ] * 2


def test_shade_string() -> None:
    assert len(SHADE_ALPHABET) == SHADES + 1 == len(set(SHADE_ALPHABET)) and "." not in SHADE_ALPHABET
    levels = np.array([0, 9, 10, 35, 36, 61, 62, 63, 255], dtype=np.uint8)
    assert shade_string(levels) == "09AZaz-_."
    assert shade_string(np.zeros(0, dtype=np.uint8)) == ""


def test_window_ids() -> None:
    ids = window_ids(TOKENS, [-2, 0, 1])
    assert ids(5) == [-1, 105, 106]  # the first token of context 1: nothing before it
    assert ids(6) == [-1, 106, 107]
    assert ids(9) == [107, 109, -1]  # its last token: nothing after it
    assert ids(12) == [110, 112, 113]
    assert window_ids(TOKENS, OFFSETS)(0) == [-1, 100, 101]


def test_index_table_with_and_without_crosscoder() -> None:
    table = index_table(_arrays(), _token_text)
    assert table["feature"] == [0, 1, 2, 3, 4]
    assert table["live"] == [True, True, True, False, True]
    assert table["alive"] == ["1111", "0111", "1111", "1000", "1101"]
    assert table["formation_step"] == [10, 20, None, None, 30]
    assert table["cosine_at_formation"] == [0.5, 0.7, None, None, 1.0]  # to_final at the formation checkpoint
    assert table["first_label"] == ["token", "inactive", "concept", "inactive", "token"]
    assert table["first_token"] == ["tok5", "∅", "tok7", "∅", "tok9"]
    assert table["final_token"] == ["tok4", "tok6", "tok8", "∅", "tok9"]
    assert table["final_frequency"] == [0.123, 0.3, 0.2, 0.0, 0.01]
    assert table["sub_pattern"][1] == "shifting token->concept"
    assert table["crosscoder_feature"] == [2, None, 0, None, 1]
    assert table["crosscoder_cosine"] == [0.9, None, 0.4, None, 0.75]
    assert table["crosscoder_emergence"] == [0, None, 15, None, None]
    assert all(len(v) == 5 for v in table.values())
    json.dumps(table, allow_nan=False)
    bare = index_table(_arrays(crosscoder=False), _token_text)
    assert not any(key.startswith("crosscoder") for key in bare)
    assert {k: v for k, v in table.items() if not k.startswith("crosscoder")} == bare


def test_feature_page() -> None:
    arrays, windows = _arrays(), _windows()
    page = feature_page(arrays, windows, 0, window_ids(TOKENS, OFFSETS))
    assert page["feature"] == 0 and page["live"] and page["labels"] == "tttc"
    assert page["dominant"] == [5, 5, 5, 4] and page["share"] == [0.5] * 4
    assert page["frequency"] == [0.1, None, 0.1, 0.1235]
    assert page["to_final"] == [0.2, 0.5, 0.8, 1.0] and page["adjacent"] == [0.3, 0.6, 0.8]
    assert page["noise_to_final"] == [0.99, 0.98] and page["progress"] == [0.0] * 4
    assert page["formation_step"] == 10
    assert page["max_activation"] == rounded(windows.values[:, 0, 0], 4)
    assert page["nearest"] == [[1, 0.5], [2, 0.25]]
    # every distinct shown row's window, -1 past the context's edge
    assert page["windows"] == {"0": [-1, 100, 101], "6": [105, 106, 107], "12": [111, 112, 113], "19": [118, 119, -1]}
    # per checkpoint only the shown contexts (rows -1 skipped), each [row, activation, shade string]
    assert [len(c) for c in page["contexts"]] == [1, 2, 2, 2]
    assert [c[0] for c in page["contexts"][3]] == [19, 6]
    assert page["contexts"][1][1] == [12, rounded(windows.values[1, 0, 1], 3), shade_string(windows.shading[1, 0, 1])]
    assert page["crosscoder"] == {
        "feature": 2, "cosine": 0.9, "same": True, "norms": [0.3, 0.6, 0.6123], "emergence_step": 0,
    }  # fmt: skip
    json.dumps(page, allow_nan=False)

    excluded = feature_page(arrays, windows, 3, window_ids(TOKENS, OFFSETS))
    assert excluded["progress"] is None and excluded["formation_step"] is None and excluded["crosscoder"] is None
    assert excluded["windows"] == {} and excluded["contexts"] == [[], [], [], []]
    assert excluded["labels"] == "iiii" and excluded["max_activation"] == [0.0] * 4
    json.dumps(excluded, allow_nan=False)
    assert feature_page(arrays, windows, 2, window_ids(TOKENS, OFFSETS))["crosscoder"]["same"] is False
    never_emerged = feature_page(arrays, windows, 4, window_ids(TOKENS, OFFSETS))["crosscoder"]
    assert never_emerged["same"] is True and never_emerged["emergence_step"] is None  # its match never emerged
    bare = feature_page(_arrays(crosscoder=False), windows, 0, window_ids(TOKENS, OFFSETS))
    assert bare["crosscoder"] is None


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_checkpoint_page(position: int) -> None:
    arrays = _arrays()
    page = checkpoint_page(arrays, position)
    assert page["step"] == STEPS[position] and page["position"] == position
    assert page["phase"] == [PHASE_NAMES[0], PHASE_NAMES[1], PHASE_NAMES[1], PHASE_NAMES[2]][position]
    assert page["metrics"] == {"mse": 0.1235, "l0": 12.0 + position}
    assert page["dead_fraction"] == [0.5, 0.4, 0.2, 0.2][position]
    labels = [str(v) for v in arrays.labels[position]]
    assert page["labels"] == {k: labels.count(k) for k in ("token", "concept", "inactive")}
    assert sum(page["labels"].values()) == 5
    # the histograms count the live features (4 of 5), every one of them
    assert sum(page["to_final"]["counts"]) == 4
    assert len(page["to_final"]["edges"]) == len(page["to_final"]["counts"]) + 1
    assert page["to_final"]["edges"][-1] == 1.0
    if position == 0:
        assert page["adjacent"] is None
    else:
        assert sum(page["adjacent"]["counts"]) == 4
    formed = {1: [[0, "token"]], 2: [[1, "shifting"]], 3: [[4, "token"]]}.get(position, [])
    assert page["formed"] == formed
    assert page["formed_patterns"] == ({formed[0][1]: 1} if formed else {})
    json.dumps(page, allow_nan=False)


def test_checkpoint_page_without_phases_or_live_features() -> None:
    arrays = dataclasses.replace(_arrays(), phases=None, live=np.zeros(5, dtype=bool))
    page = checkpoint_page(arrays, 2)
    assert page["phase"] is None
    assert page["to_final"] == {"edges": [], "counts": []} == page["adjacent"]
    json.dumps(page, allow_nan=False)


def test_search_text() -> None:
    windows = _windows()
    render = "r{}".format
    # distinct windows, latest checkpoint first
    assert search_text(windows, 0, render) == "r19 | r6 | r12 | r0"
    assert search_text(windows, 0, render, limit=2) == "r19 | r6"
    assert search_text(windows, 3, render) == ""


def test_run_description() -> None:
    run = SimpleNamespace(config=get_preset("smoke"))
    described = run_description(run, _arrays(), OFFSETS)
    assert described["preset"] == "smoke" and described["steps"] == STEPS
    assert described["n_features"] == 5 and described["n_live"] == 4
    assert described["phases"] == {"names": list(PHASE_NAMES), "emergent_step": 10, "convergent_step": 30}
    assert described["offsets"] == [-1, 0, 1] and described["shades"] == SHADES
    assert described["noise_links"] == 2 and described["baseline"] == [0.01, 0.02, 0.03, 0.04]
    assert described["crosscoder"] == {"steps": [0, 15, 30], "threshold": 0.7, "final_step": 30}
    assert described["explorer"] == {
        "enabled": True, "contexts_per_checkpoint": 5, "context_before": 8, "context_after": 2, "nearest": 8,
    }  # fmt: skip
    json.dumps(described, allow_nan=False)
    bare = run_description(run, dataclasses.replace(_arrays(crosscoder=False), phases=None), OFFSETS)
    assert bare["crosscoder"] is None and bare["phases"] is None
