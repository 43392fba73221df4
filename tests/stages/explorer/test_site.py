"""Writing the explorer's static site: data scripts that parse back, file names, the copied assets and the sizes."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from saetrack.stages.explorer import site as site_module
from saetrack.stages.explorer.site import (
    ASSETS,
    PLOTLY_FILE,
    PLOTLY_LICENSE,
    PLOTLY_SHA256,
    checkpoint_file,
    copy_assets,
    feature_file,
    plotly_source,
    site_bytes,
    write_payload,
)

PREFIX, SUFFIX = "saetrack.receive(", ");\n"
#: npm ``plotly.js-basic-dist-min`` 4.1.1's ``plotly-basic.min.js`` (assets/vendor/README.md).
VENDORED_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"


def _parse(path: Path) -> tuple[str, Any]:
    """The key and payload of a data script ``saetrack.receive("key",{...});``."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(PREFIX) and text.endswith(SUFFIX)
    key, body = text[len(PREFIX) : -len(SUFFIX)].split(",", 1)
    return json.loads(key), json.loads(body)


def test_write_payload_parses_back_with_non_ascii_text(tmp_path: Path) -> None:
    payload = {"text": "naïve “quotes” — 日本語 </script>", "values": [1, 0.25, None], "nested": {"a": [True, "é"]}}
    size = write_payload(tmp_path, "data/features/000/7.js", "feature/7", payload)
    path = tmp_path / "data/features/000/7.js"
    assert size == path.stat().st_size == len(path.read_bytes())
    assert _parse(path) == ("feature/7", payload)
    assert "日本語" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    assert path.read_text(encoding="utf-8").count("\n") == 1


def test_write_payload_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_payload(tmp_path, "data/x.js", "x", {"v": float("nan")})


def test_data_file_names() -> None:
    assert feature_file(0) == "data/features/000/0.js"
    assert feature_file(999) == "data/features/000/999.js"
    assert feature_file(12345) == "data/features/012/12345.js"
    assert feature_file(1_234_567) == "data/features/1234/1234567.js"
    assert checkpoint_file(0) == "data/checkpoints/0.js"
    assert checkpoint_file(143000) == "data/checkpoints/143000.js"


def test_copy_assets(tmp_path: Path) -> None:
    site = tmp_path / "explorer"
    site.mkdir()
    copy_assets(site)
    assets = resources.files("saetrack.stages.explorer") / "assets"
    assert set(ASSETS) == {"index.html", "explorer.js", "explorer.css"}
    for name in ASSETS:
        assert (site / name).read_bytes() == (assets / name).read_bytes()
    vendored = site / "vendor" / PLOTLY_FILE
    assert vendored.read_bytes() == plotly_source().read_bytes()
    assert hashlib.sha256(vendored.read_bytes()).hexdigest() == VENDORED_SHA256 == PLOTLY_SHA256
    assert vendored.stat().st_size > 1_000_000  # the real minified library
    assert "MIT" in (site / "vendor" / PLOTLY_LICENSE).read_text(encoding="utf-8")
    assert sorted(p.name for p in (site / "vendor").iterdir()) == sorted([PLOTLY_FILE, PLOTLY_LICENSE])


def test_plotly_source_refuses_an_altered_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(site_module, "PLOTLY_SHA256", "0" * 64)
    with pytest.raises(FileNotFoundError, match="missing or altered"):
        plotly_source()


def test_site_bytes(tmp_path: Path) -> None:
    files = {
        "index.html": 10,
        "explorer.js": 20,
        "explorer.css": 30,
        f"vendor/{PLOTLY_FILE}": 400,
        "data/run.js": 5,
        "data/index.js": 6,
        "data/vocab.js": 7,
        "data/search.js": 8,  # loaded on the first text search: not in the index part
        "data/features/000/0.js": 100,
        "data/features/001/1000.js": 200,
        "data/checkpoints/0.js": 1000,
        "data/checkpoints/10.js": 2000,
    }
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    assert site_bytes(tmp_path) == {
        "total": sum(files.values()),
        "vendor": 400,
        "features": 300,
        "checkpoints": 3000,
        "index": 10 + 20 + 30 + 5 + 6 + 7,  # the library loads with the first chart
        "files": len(files),
    }
