"""Tests of the static feature-evolution explorer, driven in a real headless Chromium (see ``browser.py``)."""
