"""What each checkpoint of a watched run costs the watcher: wall time, tokens and memory, recorded link by link.

After each new link the watcher records, in ``<run_dir>/live/costs.json`` (step -> record, merged, so a restarted
watcher keeps the earlier links' records):

* ``seconds``: wall time from the end of the previous link (or the start of the update) to the end of this one: the
  streamed forward passes, the link's training, its evaluation on held-out tokens and the drift readings; the first
  link's includes the penalty's calibration;
* ``sae_tokens``: the tokens the link trained on (``chain.tokens_for``; with a restart by the outcome rule, the
  continued link's that was thrown away as well); ``forward_tokens``: the tokens run through a model for it (the
  training tokens, and the held-out set once per evaluation and once per continuity reading: activations are
  streamed, never cached) (:func:`tokens_spent`);
* ``peak_host_bytes``: the watcher's peak resident memory so far (``getrusage``'s ``ru_maxrss``; a running maximum);
  ``peak_device_bytes``: the CUDA allocator's peak so far, on a GPU (``None`` on a CPU).

The training process pays only for writing each checkpoint (:meth:`saetrack.live.observe.Observer.observe` returns
those seconds); everything above runs in the watcher's process. ``benchmarks/bench_watch_cost.py`` measures both on
nano and projects them at the paper's sizes.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch

from saetrack import store

__all__ = ["COSTS_FILE", "link_cost", "peak_host_bytes", "read_costs", "record_cost", "tokens_spent"]

#: The per-link cost records, in the report's folder (``live/``).
COSTS_FILE = "costs.json"


def peak_host_bytes() -> int:
    """This process's peak resident memory so far, in bytes (``ru_maxrss``: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def tokens_spent(link: dict[str, Any], heldout: int) -> tuple[int, int]:
    """``(sae_tokens, forward_tokens)`` of a link record (module doc): its training tokens, plus those of a continued
    link the outcome rule threw away (``continued_tokens``); the training tokens again and ``heldout`` tokens per
    evaluation (two after such a restart) and per continuity reading taken (``chain.restart_below``'s,
    ``chain.restart_l0_ratio``'s)."""
    thrown_away = int(link.get("continued_tokens") or 0)
    sae_tokens = int(link["training"]["n_tokens"]) + thrown_away
    readings = sum(link.get(key) is not None for key in ("carried_explained_variance", "previous_l0"))
    evaluations = 2 if thrown_away else 1
    return sae_tokens, sae_tokens + heldout * (evaluations + readings)


def link_cost(seconds: float, sae_tokens: int, forward_tokens: int, device: str) -> dict[str, Any]:
    """The cost record of one link (module doc) measured now, in this process."""
    on_gpu = device.startswith("cuda") and torch.cuda.is_available()
    return {"seconds": round(float(seconds), 3), "sae_tokens": int(sae_tokens), "forward_tokens": int(forward_tokens),
            "peak_host_bytes": peak_host_bytes(),
            "peak_device_bytes": int(torch.cuda.max_memory_allocated(device)) if on_gpu else None}  # fmt: skip


def read_costs(folder: Path) -> dict[int, dict[str, Any]]:
    """Step -> cost record of every link recorded in ``folder/costs.json`` (empty when there is none yet)."""
    path = Path(folder) / COSTS_FILE
    return {int(step): record for step, record in store.read_json(path).items()} if path.is_file() else {}


def record_cost(folder: Path, step: int, cost: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Add (or replace) the record of the link at ``step`` in ``folder/costs.json``, atomically; return them all."""
    costs = {**read_costs(folder), int(step): cost}
    Path(folder).mkdir(parents=True, exist_ok=True)
    store.write_json(Path(folder) / COSTS_FILE, {str(s): costs[s] for s in sorted(costs)})
    return dict(sorted(costs.items()))
