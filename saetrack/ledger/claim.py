"""One entry of the claims ledger: a claim, its number, the control that could break it, and a verdict by a fixed rule.

A claim function reads the run's ``results.json`` (through :class:`Results`, which answers ``None`` for anything
missing) and returns a :class:`Claim`. Its rule is written in the function - before the run it judges was looked at -
and stated in the claim, so the verdict is reproducible from the numbers alone. Verdicts are :data:`HOLDS`,
:data:`FAILS` ("does not hold"), :data:`INCONCLUSIVE` and :data:`NOT_MEASURED` (an input is missing: a preset without
that notebook, or a control that was switched off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NOT_MEASURED",
    "VERDICTS",
    "Claim",
    "Results",
    "Spec",
    "fmt",
    "three_way",
]


HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
VERDICTS: tuple[str, ...] = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)


@dataclass(frozen=True)
class Claim:
    """A claim with its number, its control and its verdict (see the module doc).

    ``number`` / ``control`` are the headline values (None when not measured) and ``*_text`` say what they are in
    words; ``rule`` is the verdict rule, ``why`` the rule applied to these numbers.
    """

    id: str
    source: str
    statement: str
    sections: tuple[str, ...]
    number: float | None
    number_text: str
    control: float | None
    control_text: str
    rule: str
    verdict: str
    why: str
    figures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {VERDICTS}.")

    def record(self) -> dict[str, Any]:
        """The claim as JSON-ready data (``sections`` as a list)."""
        out = asdict(self)
        out["sections"] = list(self.sections)
        out["figures"] = list(self.figures)
        return out


class Results:
    """Read access to a run's results: ``results.get("drift", "noise_floor", "links")`` follows keys (and list
    indices), answering ``None`` where anything on the way is missing."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def get(self, *keys: str | int) -> Any:
        """The value at ``keys`` (dict keys or list indices), or None when any of them is missing."""
        node: Any = self.data
        for key in keys:
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(key, int):
                if not -len(node) <= key < len(node):
                    return None
                node = node[key]
            else:
                return None
        return node

    def has(self, *sections: str) -> bool:
        """Whether every named section of results.json is present."""
        return all(section in self.data for section in sections)


def fmt(value: float | int | None, digits: int = 2) -> str:
    """A number as the README prints it (``digits`` decimals; integers as they are; "n/a" for None)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def three_way(holds: bool, fails: bool) -> str:
    """The verdict of a rule with a "holds" and a "does not hold" condition (checked first): inconclusive otherwise."""
    return FAILS if fails else HOLDS if holds else INCONCLUSIVE


@dataclass(frozen=True)
class Spec:
    """What a claim is before any run: its id, source, statement, the results sections it reads and its rule."""

    id: str
    source: str
    statement: str
    sections: tuple[str, ...]
    rule: str
    #: The figures (registry keys, :data:`saetrack.plots.common.FIGURES`) a reader looks at for this claim.
    figures: tuple[str, ...] = ()

    def claim(
        self, number: float | None, number_text: str, control: float | None, control_text: str, verdict: str, why: str
    ) -> Claim:
        """The claim with its measurement, control and verdict."""
        value = None if number is None else float(number)
        base = None if control is None else float(control)
        return Claim(self.id, self.source, self.statement, self.sections, value, number_text, base, control_text,
                     self.rule, verdict, why, self.figures)  # fmt: skip

    def missing(self, why: str) -> Claim:
        """The claim when its inputs are missing from results.json (``why`` says which)."""
        return self.claim(None, "", None, "", NOT_MEASURED, why)
