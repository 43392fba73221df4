"""Writing the explorer's static site: the page, its script and style, the plotting library, and the data files.

The site opens from the file system with no server: ``file://`` forbids ``fetch`` of local files, so every data file
is a script that hands its payload to the page (``saetrack.receive(key, payload)``), loaded with a ``<script>`` tag
when a view needs it. The index, the run's description and the token texts load with the page; a feature's or a
checkpoint's file loads when it is opened, the search texts when the first text search is typed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ASSETS",
    "PLOTLY_FILE",
    "PLOTLY_LICENSE",
    "PLOTLY_SHA256",
    "checkpoint_file",
    "copy_assets",
    "feature_file",
    "plotly_source",
    "site_bytes",
    "write_payload",
]

#: The page, its script and its style (``saetrack/stages/explorer/assets/``), copied beside the data.
ASSETS: tuple[str, ...] = ("index.html", "explorer.js", "explorer.css")
#: The plotting library (Plotly.js, basic bundle: scatter and bar traces, vendored from npm with its licence; see
#: ``assets/vendor/README.md``), copied into the site's ``vendor/`` folder.
PLOTLY_FILE = "plotly-basic.min.js"
PLOTLY_LICENSE = "plotly-basic.LICENSE"
#: SHA-256 of the vendored file (npm ``plotly.js-basic-dist-min`` 4.1.1).
PLOTLY_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"


def _assets() -> Any:
    """The folder of the page, script, style and vendored library inside the installed package."""
    return resources.files("saetrack.stages.explorer") / "assets"


def plotly_source() -> Path:
    """The vendored Plotly.js basic bundle (``assets/vendor/plotly-basic.min.js``), checked against its SHA-256."""
    path = Path(str(_assets() / "vendor" / PLOTLY_FILE))
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != PLOTLY_SHA256:
        raise FileNotFoundError(f"the vendored Plotly.js at {path} is missing or altered (expected SHA-256 "
                                f"{PLOTLY_SHA256}); reinstall saetrack.")  # fmt: skip
    return path


def write_payload(site: Path, relative: str, key: str, payload: Any) -> int:
    """Write ``payload`` as the data script ``site/relative`` that hands it to the page under ``key``; its bytes."""
    path = Path(site) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = f"saetrack.receive({json.dumps(key)},{body});\n"
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def feature_file(feature: int) -> str:
    """The data file of feature ``feature`` (a thousand per folder): ``data/features/012/12345.js``."""
    return f"data/features/{int(feature) // 1000:03d}/{int(feature)}.js"


def checkpoint_file(step: int) -> str:
    """The data file of the checkpoint at training step ``step``: ``data/checkpoints/<step>.js``."""
    return f"data/checkpoints/{int(step)}.js"


def copy_assets(site: Path) -> None:
    """Copy the page, its script and style, and the plotting library into ``site``."""
    for name in ASSETS:
        (Path(site) / name).write_bytes((_assets() / name).read_bytes())
    vendor = Path(site) / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_source(), vendor / PLOTLY_FILE)
    shutil.copyfile(Path(str(_assets() / "vendor" / PLOTLY_LICENSE)), vendor / PLOTLY_LICENSE)


def site_bytes(site: Path) -> dict[str, int]:
    """Bytes of the site by part: ``total``, ``vendor`` (the plotting library), ``features``, ``checkpoints`` and
    ``index`` (the files the page loads when opened: page, script, style, run, index and token texts; the plotting
    library loads with the first chart)."""
    site = Path(site)
    sizes = {p.relative_to(site).as_posix(): p.stat().st_size for p in site.rglob("*") if p.is_file()}
    opened = set(ASSETS) | {"data/run.js", "data/index.js", "data/vocab.js"}
    return {
        "total": sum(sizes.values()),
        "vendor": sum(v for k, v in sizes.items() if k.startswith("vendor/")),
        "features": sum(v for k, v in sizes.items() if k.startswith("data/features/")),
        "checkpoints": sum(v for k, v in sizes.items() if k.startswith("data/checkpoints/")),
        "index": sum(v for k, v in sizes.items() if k in opened),
        "files": len(sizes),
    }
