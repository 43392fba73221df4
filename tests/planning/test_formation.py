"""The formation stage's plan."""

from __future__ import annotations

from tests.planning.conftest import by_line


def test_streamed_formation_runs_the_model_and_cached_formation_does_not() -> None:
    streamed, cached = by_line("pythia-410m-l4")["formation"], by_line("nano")["formation"]
    assert streamed.forward_tokens > 0 and cached.forward_tokens == 0
    assert streamed.device > cached.device > 0 and streamed.host > 0
    assert any("cached analysis set" in note for note in cached.notes)
