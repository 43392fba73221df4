"""Type checks of config values: known answers per annotation, and one ConfigError naming field, value and type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from saetrack.config import ConfigError, get_preset
from saetrack.config.types import check_types, conforms, describe


@pytest.mark.parametrize(
    ("value", "hint", "ok"),
    [
        (3, int, True), (True, int, False), (3.0, int, False), ("3", int, False),
        (3, float, True), (0.5, float, True), (False, float, False), ("abc", float, False),
        (True, bool, True), (1, bool, False),
        ("x", str, True), (None, str, False), (None, int | None, True), (2, int | None, True), ("2", int | None, False),
        ("streamed", Literal["cached", "streamed"], True), ("other", Literal["cached", "streamed"], False),
        ((1, 2), tuple[int, ...], True), ([1, "a"], tuple[int, ...], False), ((1, "a"), tuple[int, str], True),
        ((1,), tuple[int, str], False), ({"a": 1}, dict[str, int], True), ([1], dict[str, int], False),
        (object(), object, True),
    ],
)  # fmt: skip
def test_conforms_on_known_answers(value: object, hint: object, ok: bool) -> None:
    assert conforms(value, hint) is ok


def test_describe_reads_like_the_annotation() -> None:
    assert describe(int) == "int" and describe(float | None) == "float or None"
    assert describe(tuple[str, ...]) == "a tuple of str"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"


@dataclass
class _Section:
    steps: int
    rate: float | None = None


def test_check_types_names_the_field_the_value_and_the_type() -> None:
    check_types("demo", _Section, {"steps": 3, "rate": 1})
    with pytest.raises(ConfigError, match=r"^demo\.rate = 'fast' is invalid: must be float or None\.$"):
        check_types("demo", _Section, {"steps": 3, "rate": "fast"})


def test_overrides_of_the_wrong_type_are_one_config_error() -> None:
    smoke = get_preset("smoke")
    with pytest.raises(ConfigError, match=r"run\.seed = 'abc' is invalid: must be int"):
        smoke.with_overrides({"seed": "abc"})
    with pytest.raises(ConfigError, match=r"chain\.l1_coefficient = 'abc' is invalid: must be float"):
        smoke.with_overrides({"chain.l1_coefficient": "abc"})
    assert smoke.with_overrides({"chain.l1_coefficient": 1}).chain.l1_coefficient == 1  # an int is a float
