"""Root pytest configuration: the notebooks run under nbval at the smoke size, in a temporary run folder.

Set here (before any kernel starts) so the kernels nbval launches inherit it; ``SAETRACK_PRESET`` picks the
preset each notebook's parameters cell reads. Unit tests get their own temporary folders from
``tests/conftest.py``.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SAETRACK_PRESET", "smoke")
os.environ.setdefault("SAETRACK_RUNS", tempfile.mkdtemp(prefix="saetrack-nbval-runs-"))
os.environ.setdefault("SAETRACK_FIGURES", tempfile.mkdtemp(prefix="saetrack-nbval-figures-"))
for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(offline, "1")
