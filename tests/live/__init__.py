"""Tests of saetrack.live."""
