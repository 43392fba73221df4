"""Fixtures of the pipeline tests."""

from __future__ import annotations

import pytest

from saetrack.config import RunConfig


@pytest.fixture(scope="package")
def run(smoke: RunConfig) -> RunConfig:
    """The smoke preset."""
    return smoke
